# Admin daemons: auth (8001), flags (8002), targeting (8003).
ADMIN_COMMON_SRCS := $(wildcard admin-daemons/common/*.c)
ADMIN_COMMON_OBJS := $(ADMIN_COMMON_SRCS:%.c=$(BUILD)/%.o)
# hiredis formats commands and parses replies; the bytes go through
# common/tm_redis.c, over OpenSSL for rediss:// (hiredis 0.14 has no TLS)
ADMIN_LIBS := -lmicrohttpd -lpq -lhiredis -lssl -lcurl $(LIBS_CORE)
ADMIN_NAMES := $(basename $(notdir $(wildcard admin-daemons/*.c)))
ADMIN_BINS := $(ADMIN_NAMES:%=$(BUILD)/admin-daemons/togglemaster-%)

$(BUILD)/admin-daemons/%.o: CFLAGS += -Iadmin-daemons/common
$(BUILD)/admin-daemons/common/%.o: CFLAGS += -Iadmin-daemons/common

$(BUILD)/admin-daemons/togglemaster-%: $(BUILD)/admin-daemons/%.o $(ADMIN_COMMON_OBJS) $(LIBTM)
	$(CC) -o $@ $^ $(LDFLAGS) $(ADMIN_LIBS)

all: $(ADMIN_BINS)

install-daemons: $(ADMIN_BINS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(ADMIN_BINS) $(DESTDIR)$(PREFIX)/bin/
install: install-daemons
