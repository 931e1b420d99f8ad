#!/usr/bin/env bash
# Starts and stops one local service in a run directory, the same way for
# `make run` (.run/) and for the test harness (a temp dir per test).
#   svc.sh start <name> <rundir> <port>   -> <rundir>/<name>.pid, <rundir>/<name>.log
#   svc.sh stop  <name> <rundir>
# Names: postgres, redis, moto, auth, flags, targeting, analytics, nginx.
# Daemons take the rest of their settings from the environment.
set -euo pipefail
cmd=$1 name=$2 rundir=$(realpath -m "$3") port=${4:-}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TM_BUILD:-$root/build}
pidfile=$rundir/$name.pid log=$rundir/$name.log
mkdir -p "$rundir"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# PostgreSQL refuses to run as root; run it as the packaged 'postgres' user.
PG_AS=()
[ "$(id -u)" -eq 0 ] && PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
as_pg() { "${PG_AS[@]}" "$@"; }

wait_tcp() { # port seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "svc: $name did not come up on 127.0.0.1:$1; last log lines:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

spawn() { # command...
  setsid "$@" >>"$log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
}

start() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "svc: $name already running (pid $(cat "$pidfile"))"; return 0
  fi
  case $name in
    postgres)
      local data=$rundir/pgdata bin; bin=$(pg_bin)
      if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"; chmod 700 "$data"
        [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data" "$rundir"
        as_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >"$rundir/initdb.log" 2>&1
      fi
      [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$rundir" && touch "$log" && chown postgres "$log"
      # Optional, for tests of TLS to the database: TM_PG_TLS_DIR (server.pem,
      # server.key) to accept TLS too; the key is copied with the owner and
      # mode PostgreSQL insists on.
      local tls=()
      if [ -n "${TM_PG_TLS_DIR:-}" ]; then
        install -m 600 "$TM_PG_TLS_DIR/server.key" "$rundir/pg-server.key"
        [ "$(id -u)" -eq 0 ] && chown postgres "$rundir/pg-server.key"
        tls=(-c ssl=on -c "ssl_cert_file=$TM_PG_TLS_DIR/server.pem" -c "ssl_key_file=$rundir/pg-server.key")
      fi
      spawn "${PG_AS[@]}" "$bin/postgres" -D "$data" -p "$port" -k "$rundir" \
        -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 "${tls[@]}"
      wait_tcp "$port" 30
      local i
      for ((i = 0; i < 100; i++)); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.1
      done
      "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='togglemaster'" | grep -q 1 || \
        "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres togglemaster
      ;;
    redis)
      # Optional, for tests of production-like Redis: TM_REDIS_PASSWORD
      # (requirepass), TM_REDIS_TLS_PORT + TM_REDIS_TLS_DIR (redis.pem,
      # redis.key, ca.pem) to also listen with TLS; the plain port stays, on
      # loopback, for local tools.
      local extra=()
      if [ -n "${TM_REDIS_TLS_PORT:-}" ]; then
        extra+=(--tls-port "$TM_REDIS_TLS_PORT" --tls-auth-clients no
                --tls-cert-file "$TM_REDIS_TLS_DIR/redis.pem"
                --tls-key-file "$TM_REDIS_TLS_DIR/redis.key"
                --tls-ca-cert-file "$TM_REDIS_TLS_DIR/ca.pem")
      fi
      [ -n "${TM_REDIS_PASSWORD:-}" ] && extra+=(--requirepass "$TM_REDIS_PASSWORD")
      spawn redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$rundir" --daemonize no "${extra[@]}"
      wait_tcp "$port" 10
      [ -z "${TM_REDIS_TLS_PORT:-}" ] || wait_tcp "$TM_REDIS_TLS_PORT" 10 ;;
    moto)
      spawn python3 -m moto.server -H 127.0.0.1 -p "$port"
      wait_tcp "$port" 30 ;;
    auth|flags|targeting)
      PORT=$port spawn "$build/admin-daemons/togglemaster-$name"
      wait_tcp "$port" 15 ;;
    analytics)
      PORT=$port spawn "$build/analytics-worker/togglemaster-analytics"
      wait_tcp "$port" 15 ;;
    nginx)
      # port is unused: nginx listens where its config says.
      spawn nginx -p "$rundir/nginx" -c "$rundir/nginx/nginx.conf" -g 'daemon off;'
      local i
      for ((i = 0; i < 100; i++)); do [ -s "$rundir/nginx/nginx.pid" ] && break; sleep 0.05; done ;;
    *) echo "svc: unknown service $name" >&2; exit 2 ;;
  esac
}

stop() {
  [ -f "$pidfile" ] || return 0
  local pid i sig=TERM
  pid=$(cat "$pidfile")
  [ "$name" = postgres ] && sig=INT   # PostgreSQL's "fast" shutdown
  if kill -0 "$pid" 2>/dev/null; then
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: svc.sh start|stop <name> <rundir> [port]" >&2; exit 2 ;;
esac
