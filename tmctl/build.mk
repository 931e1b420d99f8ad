# tmctl: the command-line client (libcurl + jansson, and lib/ for the checks).
TMCTL_SRCS := $(wildcard tmctl/*.c)
TMCTL_OBJS := $(TMCTL_SRCS:%.c=$(BUILD)/%.o)
TMCTL := $(BUILD)/tmctl/tmctl

$(TMCTL): $(TMCTL_OBJS) $(LIBTM)
	$(CC) -o $@ $^ $(LDFLAGS) -lcurl $(LIBS_CORE) -lm

all: $(TMCTL)

.PHONY: install-tmctl
install-tmctl: $(TMCTL)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(TMCTL) $(DESTDIR)$(PREFIX)/bin/tmctl
install: install-tmctl
