#!/bin/bash
# First start on an empty data directory: initdb with POSTGRES_USER as the
# superuser (password POSTGRES_PASSWORD, SCRAM from the network) and
# POSTGRES_DB created; then PostgreSQL runs as the postgres user, listening
# on every address.
set -euo pipefail
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
: "${POSTGRES_PASSWORD:?postgres stand-in: POSTGRES_PASSWORD is required}"
as_pg=(setpriv --reuid postgres --regid postgres --init-groups)

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  chown postgres "$pw"
  "${as_pg[@]}" initdb --username="$user" --pwfile="$pw" --auth-local=trust \
    --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" |
      "${as_pg[@]}" postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres stand-in: initialised $PGDATA (user $user, database $db)"
fi
if [ "${1:-}" = postgres ]; then
  exec "${as_pg[@]}" "$@"
fi
exec "$@"
