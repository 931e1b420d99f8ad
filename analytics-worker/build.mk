# analytics-worker: SQS -> DynamoDB (port 8005). Links the daemons' HTTP layer
# (admin-daemons/common/tm_http) for /health* and /metrics.
WORKER_SRCS := $(wildcard analytics-worker/*.c)
WORKER_OBJS := $(WORKER_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/admin-daemons/common/tm_http.o
WORKER_BIN  := $(BUILD)/analytics-worker/togglemaster-analytics
WORKER_LIBS := -lcurl -lmicrohttpd -lpthread $(LIBS_CORE)

$(BUILD)/analytics-worker/%.o: CFLAGS += -Iadmin-daemons/common

$(WORKER_BIN): $(WORKER_OBJS) $(LIBTM)
	$(CC) -o $@ $^ $(LDFLAGS) $(WORKER_LIBS)

all: $(WORKER_BIN)

install-worker: $(WORKER_BIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(WORKER_BIN) $(DESTDIR)$(PREFIX)/bin/
install: install-worker
