# analytics-worker: SQS -> DynamoDB (port 8005). Links the daemons' HTTP layer
# (admin-daemons/common/tm_http) for /health*, /metrics and the usage API,
# and their API-key check with its Redis client and its call to auth
# (tm_apikey, tm_publish, tm_redis, tm_resolve, tm_peer) for the usage API:
# one implementation, as the flags daemon's.
WORKER_SRCS := $(wildcard analytics-worker/*.c)
WORKER_SHARED := tm_http tm_apikey tm_peer tm_publish tm_redis tm_resolve
WORKER_OBJS := $(WORKER_SRCS:%.c=$(BUILD)/%.o) $(WORKER_SHARED:%=$(BUILD)/admin-daemons/common/%.o)
WORKER_BIN  := $(BUILD)/analytics-worker/togglemaster-analytics
WORKER_LIBS := -lcurl -lmicrohttpd -lhiredis -lssl -lpthread $(LIBS_CORE)

$(BUILD)/analytics-worker/%.o: CFLAGS += -Iadmin-daemons/common

$(WORKER_BIN): $(WORKER_OBJS) $(LIBTM)
	$(CC) -o $@ $^ $(LDFLAGS) $(WORKER_LIBS)

all: $(WORKER_BIN)

install-worker: $(WORKER_BIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(WORKER_BIN) $(DESTDIR)$(PREFIX)/bin/
install: install-worker
