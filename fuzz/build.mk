# Fuzz targets (fuzz/fuzz_<name>.c, libFuzzer's entry point).
#  - `make test` replays fuzz/corpus/<name>/ and fuzz/regressions/<name>/
#    through gcc-built replay binaries (fuzz/driver.c) under the sanitizers;
#  - `make fuzz` builds them with clang's libFuzzer and fuzzes each for
#    FUZZ_SECONDS (default 60), printing executions and coverage per target.
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
FUZZ_NAMES := $(patsubst fuzz/fuzz_%.c,%,$(FUZZ_SRCS))
FUZZ_REPLAY := $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay-%)

$(BUILD)/fuzz/replay-%: fuzz/fuzz_%.c fuzz/driver.c $(LIBTM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ fuzz/fuzz_$*.c fuzz/driver.c $(LIBTM) $(LDFLAGS) $(LIBS_CORE) -lm

all: $(FUZZ_REPLAY)

.PHONY: fuzz
fuzz: deps
	@FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) scripts/fuzz.sh $(FUZZ_NAMES)
