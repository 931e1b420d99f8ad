# Benchmarks of lib/ (programs, not tests): built with everything so they
# keep compiling; `make bench` runs them. bench/README.md tells how to read
# them and how to count instructions with callgrind.
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

$(BUILD)/bench/%: bench/%.c $(LIBTM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIBTM) $(LDFLAGS) $(LIBS_CORE) -lm

all: $(BENCH_BINS)

# `make bench` runs every benchmark: this one, the edge, sync and worker ones.
.PHONY: bench
bench: deps all
	@TM_BUILD=$(abspath $(BUILD)) scripts/bench.sh
