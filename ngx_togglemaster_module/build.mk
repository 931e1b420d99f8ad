# The nginx module, built against the nginx users run: the distro nginx,
# from the nginx-dev sources and their conf_flags, as Debian builds its own
# libnginx-mod-*. The source tree is copied under $(BUILD) so configure
# never writes into /usr/share.
#   NGX_SRC=/path/to/nginx-x.y.z make   builds against upstream sources
#                                         (configured --with-compat)

NGX_SRC      ?= /usr/share/nginx/src
NGX_OUT      := $(BUILD)/nginx
NGX_TREE     := $(NGX_OUT)/src
NGX_OBJS     := $(abspath $(NGX_OUT)/objs)
NGX_MODULE   := $(NGX_OUT)/ngx_http_togglemaster_module.so
NGX_MOD_SRCS := config $(wildcard ngx_togglemaster_module/*.c) \
                $(wildcard ngx_togglemaster_module/*.h) \
                $(wildcard lib/tm_*.c) \
                $(wildcard lib/tm_*.h)

# SAN=1 (make test) instruments the module with ASan+UBSan; the tests run it
# in the distro nginx with the ASan runtime preloaded (t/lib/TM/Nginx.pm).
NGX_SAN_OPTS :=
ifeq ($(SAN),1)
NGX_SAN_OPTS := --with-cc-opt="$(filter -fsanitize%,$(OPT)) -fno-omit-frame-pointer" \
                --with-ld-opt="$(filter -fsanitize=%,$(OPT))"
endif

$(NGX_OBJS)/Makefile: config ngx_togglemaster_module/build.mk
	@rm -rf $(NGX_TREE) && mkdir -p $(NGX_OUT)
	cp -r $(NGX_SRC) $(NGX_TREE)
	cd $(NGX_TREE) && bash -c 'flags=(--with-compat); \
	  if [ -f conf_flags ]; then . ./conf_flags; flags=("$${NGX_CONF_FLAGS[@]}"); fi; \
	  ./configure "$${flags[@]}" $(NGX_SAN_OPTS) --add-dynamic-module=$(CURDIR) \
	    --builddir=$(NGX_OBJS)' > $(abspath $(NGX_OUT))/configure.log 2>&1 \
	  || { tail -n 30 $(abspath $(NGX_OUT))/configure.log; exit 1; }

$(NGX_MODULE): $(NGX_OBJS)/Makefile $(NGX_MOD_SRCS)
	$(MAKE) --no-print-directory -C $(NGX_TREE) -f $(NGX_OBJS)/Makefile modules
	@# a new inode: a running nginx keeps its mapping of the old file
	cp $(NGX_OBJS)/ngx_http_togglemaster_module.so $@.tmp && mv -f $@.tmp $@

all: $(NGX_MODULE)
