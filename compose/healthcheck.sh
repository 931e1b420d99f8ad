#!/bin/bash
# tm-healthcheck [PORT] [PATH]: exits 0 when GET http://127.0.0.1:PORT/PATH
# answers 2xx within 5 seconds, 1 otherwise. For container healthchecks in
# images that carry no curl: bash's /dev/tcp is all it needs.
port=${1:-${PORT:-80}}
path=${2:-/health/ready}
{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || exit 1
case $status in
  'HTTP/1.'[01]' 2'*) exit 0 ;;
  *) exit 1 ;;
esac
