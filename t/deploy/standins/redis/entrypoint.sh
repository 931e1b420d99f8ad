#!/bin/bash
# redis-server ARGS...: as the official image, listening on every address
# without protected mode (no config file), as the redis user.
set -euo pipefail
if [ "${1:-}" = redis-server ]; then
  shift
  exec setpriv --reuid redis --regid redis --init-groups \
    redis-server --protected-mode no "$@"
fi
exec "$@"
