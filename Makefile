# ToggleMaster — one Makefile for the whole tree.
#   make            build lib/, the admin daemons, the analytics worker, the nginx module
#   make run/stop   start/stop the local stack under .run/
#   make test       install what is missing, build, run every test with prove
#   make install PREFIX=/usr/local
# Each component adds its own rules in <dir>/build.mk; this file only holds
# what they share.

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
OPT      ?= -O2 -g
# SAN=1 builds everything (except the nginx module) with ASan+UBSan.
SAN      ?=
ifeq ($(SAN),1)
OPT      += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
BUILD    := build-san
endif
CFLAGS   += $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Ilib \
            -I/usr/include/postgresql -MMD -MP
LDFLAGS  += $(filter -fsanitize%,$(OPT))
# lib/tm_regex: PCRE2 (8-bit), the library nginx itself links.
LIBS_CORE := -ljansson -lcrypto -lpcre2-8

.PHONY: all deps run stop test unit install clean load soak
all:

LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIBTM    := $(BUILD)/libtm.a

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIBTM): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# C unit tests: t/unit/<name>.c -> $(BUILD)/t/unit/<name>, printing TAP;
# t/unit-<name>.t runs it under prove.
UNIT_SRCS := $(wildcard t/unit/*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
$(BUILD)/t/unit/%: t/unit/%.c $(LIBTM)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIBTM) $(LDFLAGS) $(LIBS_CORE) -lm

all: $(LIBTM) $(UNIT_BINS)
unit: $(UNIT_BINS)

include $(wildcard */build.mk)

deps:
	@scripts/deps.sh

run: deps all
	@scripts/run.sh start

stop:
	@scripts/run.sh stop

# Tests run against the ASan+UBSan build (build-san/) of lib/, the daemons and
# the worker; the harness fails a test file on any sanitizer report.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory SAN=1 all
	TM_BUILD=$(CURDIR)/build-san ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1 prove -I t/lib $(PROVE_FLAGS) t/

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

install: all
	install -d $(DESTDIR)$(PREFIX)/lib/nginx/modules $(DESTDIR)$(PREFIX)/etc/togglemaster
	install -m 644 $(NGX_MODULE) $(DESTDIR)$(PREFIX)/lib/nginx/modules/
	install -m 644 docs/redis-layout.md $(DESTDIR)$(PREFIX)/etc/togglemaster/
	if ls nginx-conf/*.conf >/dev/null 2>&1; then install -m 644 nginx-conf/*.conf $(DESTDIR)$(PREFIX)/etc/togglemaster/; fi
	# the admin console (/ui/): point @CONSOLE@ in the configs here
	cd console && find . -type f -exec install -D -m 644 {} $(DESTDIR)$(PREFIX)/share/togglemaster/console/{} \;

# The original acceptance run (p95 < 2 s, < 1 % errors) and a soak; both
# start their own stack on free ports. LOAD_SECONDS, SOAK_SECONDS.
load: deps all
	@perl -I t/lib bench/load.pl
soak: deps all
	@perl -I t/lib bench/soak.pl
