#!/bin/bash
# images.sh: the images t/compose.t needs before compose can build or start
# anything, each made again only when its inputs change (podman's storage is
# the cache; an image's label holds the hash of what it was built from):
#   debian:bookworm, debian:bookworm-slim   base-image.sh (debootstrap)
#   postgres:15-bookworm, redis:7.2-bookworm, localstack/localstack:3.8
#                                           stand-ins, standins/<name>/
# CONTAINERS_CONF must point at containers.conf (t/compose.t sets it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
label=org.togglemaster.cache-key

hash_of() { sha256sum | cut -c1-16; }

work=$(mktemp -d /var/tmp/tm-images-XXXXXX)
trap 'rm -rf "$work"' EXIT

base_key=$(hash_of < "$here/base-image.sh")
"$here/base-image.sh" "$base_key"

declare -A image=(
  [postgres]=docker.io/library/postgres:15-bookworm
  [redis]=docker.io/library/redis:7.2-bookworm
  [localstack]=docker.io/localstack/localstack:3.8
)
for s in postgres redis localstack; do
  dir=$here/standins/$s
  # a new base image makes new stand-ins
  key=$( { echo "$base_key"; cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum; } | hash_of)
  if [ "$(podman image inspect --format "{{index .Labels \"$label\"}}" "${image[$s]}" 2>/dev/null)" = "$key" ]; then
    echo "images: cached ${image[$s]}"
    continue
  fi
  echo "images: building ${image[$s]} (stand-in)"
  ctx=$work/$s
  cp -r "$dir" "$ctx"
  if [ "$s" = localstack ]; then
    # containers cannot reach PyPI here (its TLS is the host's business):
    # the host's pip fetches wheels for the image's Python (Debian 12: 3.11)
    mkdir "$ctx/wheels"
    if ! python3 -m pip download --quiet --dest "$ctx/wheels" --only-binary=:all: \
           --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
           'moto[server]>=5,<6' > "$work/$s.log" 2>&1; then
      tail -n 40 "$work/$s.log" >&2
      echo "images: downloading moto's wheels failed" >&2
      exit 1
    fi
  fi
  if ! podman build --pull=never --label "$label=$key" -t "${image[$s]}" "$ctx" > "$work/$s.log" 2>&1; then
    tail -n 40 "$work/$s.log" >&2
    echo "images: building the $s stand-in failed" >&2
    exit 1
  fi
done
# what an earlier key left behind, untagged
podman image prune -f --filter "label=$label" >/dev/null
