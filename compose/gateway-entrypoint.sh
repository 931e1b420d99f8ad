#!/bin/bash
# Entry point of the gateway image: nginx with the ToggleMaster module, run
# as a non-root user on a read-only root filesystem.
#
# The config template (nginx-conf/ingress.conf, baked into the image) may
# hold @NAME@ placeholders, as nginx-conf/dev.conf does for `make run`; each
# is replaced by the environment variable NAME. @MODULE@ and @RUN@ have
# defaults: the module's path, and /var/cache/togglemaster, the image's
# writable directory for nginx's pid, temp files and the flag snapshot (as in
# dev.conf, they go under @RUN@/nginx/), which compose and Kubernetes mount a
# volume on so the snapshot outlives a container restart; @RESOLVER@ defaults
# to the first nameserver of /etc/resolv.conf and @CONSOLE@ (the admin
# console's files, served at /ui/) to where the image installs them. A placeholder
# without a value stops the container with a message naming it.
# Arguments are passed on to nginx (`-t` checks the rendered config).
set -euo pipefail

template=${TM_NGINX_TEMPLATE:-/etc/togglemaster/ingress.conf}
run=${TM_NGINX_DIR:-/tmp/nginx}
export MODULE=${MODULE:-${TM_NGINX_MODULE:-/usr/lib/nginx/modules/ngx_http_togglemaster_module.so}}
export RUN=${RUN:-/var/cache/togglemaster}
export CONSOLE=${CONSOLE:-/usr/share/togglemaster/console}
# nginx's resolver, with which workers follow the AWS endpoints' DNS answers
# (AWS rotates their addresses): the pod's or container's nameserver unless
# RESOLVER names one
if [ -z "${RESOLVER+set}" ]; then
  ns=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf 2>/dev/null || true)
  case $ns in *:*) ns="[$ns]" ;; esac
  export RESOLVER=${ns:-127.0.0.1}
fi

# REDIS_CLUSTER=1 (as the daemons read it: ElastiCache Serverless, a Redis
# Cluster) becomes togglemaster_redis's "cluster" parameter, @REDIS_MODE@
case ${REDIS_CLUSTER:-0} in
  1) export REDIS_MODE=cluster ;;
  0) export REDIS_MODE= ;;
  *) echo "gateway: REDIS_CLUSTER must be 1 (Redis Cluster) or 0, not \"$REDIS_CLUSTER\"" >&2; exit 2 ;;
esac

mkdir -p "$run/logs" "$RUN/nginx"
# `load_module modules/...;` resolves against the prefix (-p).
[ -e "$run/modules" ] || [ -L "$run/modules" ] || ln -s /usr/lib/nginx/modules "$run/modules"

conf=$(<"$template")
missing=()
# placeholders in comments are text, not settings: only the rest is searched
for token in $(grep -v '^[[:space:]]*#' "$template" | grep -o '@[A-Z][A-Z0-9_]*@' | sort -u); do
  name=${token//@/}
  if [ -z "${!name+set}" ]; then
    missing+=("$name")
    continue
  fi
  conf=${conf//"$token"/"${!name}"}
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gateway: $template needs these environment variables: ${missing[*]}" >&2
  exit 2
fi
printf '%s\n' "$conf" > "$run/nginx.conf"

# Debian's nginx is compiled with /run/nginx.pid and runs in the background;
# add what the config does not say itself.
globals=()
grep -Eq '^[[:space:]]*daemon[[:space:]]' "$run/nginx.conf" || globals+=('daemon off;')
grep -Eq '^[[:space:]]*pid[[:space:]]' "$run/nginx.conf" || globals+=("pid $run/nginx.pid;")
args=(-p "$run" -c "$run/nginx.conf" -e stderr)
[ ${#globals[@]} -gt 0 ] && args+=(-g "${globals[*]}")
exec nginx "${args[@]}" "$@"
