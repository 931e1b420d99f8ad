#!/usr/bin/env bash
# `make run` / `make stop`: the whole local stack on 127.0.0.1, state in .run/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${TM_RUN_DIR:-$root/.run}
svc=$root/scripts/svc.sh
cd "$root"

# Every port can be moved (the tests run a second stack beside yours).
PG_PORT=${TM_PG_PORT:-5432}
REDIS_PORT=${TM_REDIS_PORT:-6379}
AWS_PORT=${TM_AWS_PORT:-4566}
AUTH_PORT=${TM_AUTH_PORT:-8001}
FLAGS_PORT=${TM_FLAGS_PORT:-8002}
TARGETING_PORT=${TM_TARGETING_PORT:-8003}
EVAL_PORT=${TM_EVAL_PORT:-8004}
ANALYTICS_PORT=${TM_ANALYTICS_PORT:-8005}
INGRESS_PORT=${TM_INGRESS_PORT:-8080}
DEFAULT_MASTER_KEY=admin-secreto-123
export MASTER_KEY=${MASTER_KEY:-$DEFAULT_MASTER_KEY}
# A local stack: the daemons accept the well-known default key above.
export TOGGLEMASTER_ENV=${TOGGLEMASTER_ENV:-development}
export DATABASE_URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:$PG_PORT/togglemaster}
# A REDIS_URL of yours names your Redis (a password, a database, rediss://
# with REDIS_CA_FILE / REDIS_TLS_SERVER_NAME): make run starts none, and the
# daemons and nginx both use it. Unset: make run starts one on REDIS_PORT.
own_redis=${REDIS_URL:+yes}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}
export AUTH_SERVICE_URL=${AUTH_SERVICE_URL:-http://127.0.0.1:$AUTH_PORT}
# flags copies and deletes rules through targeting (promotion, environments).
export TARGETING_SERVICE_URL=${TARGETING_SERVICE_URL:-http://127.0.0.1:$TARGETING_PORT}
export BIND_ADDR=${BIND_ADDR:-127.0.0.1}
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:$AWS_PORT}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_DYNAMODB_TABLE=${AWS_DYNAMODB_TABLE:-ToggleMasterAnalytics}
export AWS_SQS_URL=${AWS_SQS_URL:-$AWS_ENDPOINT_URL/000000000000/togglemaster-events}

# Everything make run may start, in start order; stop goes in reverse.
ALL=(postgres redis moto auth flags targeting analytics nginx)

# A string as an nginx configuration token: quoted, \\ and " escaped.
nginx_str() {
  local v=${1//\\/\\\\}
  printf '"%s"' "${v//\"/\\\"}"
}

# nginx's togglemaster_redis lines, from what the daemons read.
redis_conf() {
  printf 'togglemaster_redis %s;\n' "$(nginx_str "$REDIS_URL")"
  if [ -n "${REDIS_CA_FILE:-}" ]; then
    printf 'togglemaster_redis_ssl_trusted_certificate %s;\n' "$(nginx_str "$REDIS_CA_FILE")"
  fi
  if [ -n "${REDIS_TLS_SERVER_NAME:-}" ]; then
    printf 'togglemaster_redis_ssl_server_name %s;\n' "$(nginx_str "$REDIS_TLS_SERVER_NAME")"
  fi
}

# REDIS_URL with its password as ***.
redis_shown() {
  printf '%s' "$REDIS_URL" | sed -E -e 's#^(rediss?://)([^:@/]*):[^@/]*@#\1\2:***@#' \
                                    -e 's#^(rediss?://)([^:@/]+)@#\1***@#'
}

start() {
  mkdir -p "$run"
  echo "Starting ToggleMaster on 127.0.0.1 (state and logs in .run/)"
  "$svc" start postgres "$run" "$PG_PORT"
  [ -n "$own_redis" ] || "$svc" start redis "$run" "$REDIS_PORT"
  "$svc" start moto "$run" "$AWS_PORT"
  "$svc" start auth "$run" "$AUTH_PORT"
  "$svc" start flags "$run" "$FLAGS_PORT"
  "$svc" start targeting "$run" "$TARGETING_PORT"
  local parts="  auth        http://127.0.0.1:$AUTH_PORT
  flags       http://127.0.0.1:$FLAGS_PORT
  targeting   http://127.0.0.1:$TARGETING_PORT"
  if [ -x build/analytics-worker/togglemaster-analytics ]; then
    if [ -x scripts/aws-init.sh ]; then
      scripts/aws-init.sh "$AWS_ENDPOINT_URL" >>"$run/aws-init.log" 2>&1 || \
        echo "warning: AWS emulator init failed, see .run/aws-init.log"
    fi
    "$svc" start analytics "$run" "$ANALYTICS_PORT"
    parts+="
  analytics   http://127.0.0.1:$ANALYTICS_PORT"
  fi
  if [ -f build/nginx/ngx_http_togglemaster_module.so ] && [ -f nginx-conf/dev.conf ]; then
    mkdir -p "$run/nginx/logs"
    # the event streams' token secret: one per .run, kept across restarts
    # so that stream URLs handed out stay valid
    [ -s "$run/sse-secret" ] || (umask 077 && openssl rand -hex 32 >"$run/sse-secret")
    sse_secret=$(cat "$run/sse-secret")
    # the Redis URL may hold a password: in a file of its own, not shown
    (umask 077 && redis_conf >"$run/nginx/redis.conf")
    sed -e "s#@MODULE@#$root/build/nginx/ngx_http_togglemaster_module.so#g" \
        -e "s#@RUN@#$run#g" \
        -e "s#@SQS_URL@#$AWS_SQS_URL#g" -e "s#@AWS_ENDPOINT@#$AWS_ENDPOINT_URL#g" \
        -e "s#@AUTH_PORT@#$AUTH_PORT#g" -e "s#@FLAGS_PORT@#$FLAGS_PORT#g" \
        -e "s#@TARGETING_PORT@#$TARGETING_PORT#g" -e "s#@ANALYTICS_PORT@#$ANALYTICS_PORT#g" \
        -e "s#@EVAL_PORT@#$EVAL_PORT#g" -e "s#@INGRESS_PORT@#$INGRESS_PORT#g" \
        -e "s#@CONSOLE@#$root/console#g" -e "s#@SSE_SECRET@#$sse_secret#g" \
        -e "s#@SSE_TOKEN_TTL@#${TM_SSE_TOKEN_TTL:-1h}#g" \
        nginx-conf/dev.conf > "$run/nginx/nginx.conf"
    # As root, nginx workers run as nobody: they write the snapshot file here.
    [ "$(id -u)" -eq 0 ] && chown -R nobody "$run/nginx"
    "$svc" start nginx "$run"
    parts+="
  evaluation  http://127.0.0.1:$EVAL_PORT   (nginx module: /evaluate, /ofrep/v1)
  ingress     http://127.0.0.1:$INGRESS_PORT   (/auth /flags /targeting /evaluate /analytics)
  console     http://127.0.0.1:$INGRESS_PORT/ui/"
  fi
  cat <<MSG
ToggleMaster is running:
$parts
  PostgreSQL  $DATABASE_URL
  Redis       $(redis_shown)$([ -n "$own_redis" ] && echo "  (yours: REDIS_URL)")
  AWS (moto)  $AWS_ENDPOINT_URL  (SQS + DynamoDB emulator)
MASTER_KEY: $( [ "$MASTER_KEY" = "$DEFAULT_MASTER_KEY" ] && echo "$MASTER_KEY (the default; set MASTER_KEY to change it)" || echo "(from your environment)")
Try:
  curl -s -X POST http://127.0.0.1:$AUTH_PORT/admin/keys -H "Authorization: Bearer \$MASTER_KEY" -d '{"name":"me"}'
Stop with: make stop
MSG
}

stop() {
  local i
  for ((i = ${#ALL[@]} - 1; i >= 0; i--)); do
    if [ -f "$run/${ALL[$i]}.pid" ]; then
      "$svc" stop "${ALL[$i]}" "$run" && echo "stopped ${ALL[$i]}"
    fi
  done
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: run.sh start|stop" >&2; exit 2 ;;
esac
