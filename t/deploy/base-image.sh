#!/bin/bash
# base-image.sh KEY: makes the Debian 12 base images compose/Dockerfile and
# the stand-ins start FROM, without an image registry (none is reachable on
# the test machines): a minimal root filesystem from Debian's own mirror
# (debootstrap), imported into podman as docker.io/library/debian:bookworm
# and :bookworm-slim, labelled with KEY. Does nothing when both already
# carry KEY (the caller derives it from this script, so a change here
# rebuilds them).
#
# Unlike Docker Hub's images, slim and non-slim are the same root filesystem
# here (Debian's minbase variant, docs included); apt gets the same three
# suites as Docker Hub's images (bookworm, -updates, -security).
set -euo pipefail
key=${1:?usage: base-image.sh KEY}
mirror=${TM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${TM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
label=org.togglemaster.cache-key
images=(docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim)

have() {
  [ "$(podman image inspect --format "{{index .Labels \"$label\"}}" "$1" 2>/dev/null)" = "$key" ]
}
fresh=1
for i in "${images[@]}"; do have "$i" || fresh=0; done
if [ $fresh = 1 ]; then
  echo "base-image: cached (${images[*]})"
  exit 0
fi

work=$(mktemp -d /var/tmp/tm-base-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "base-image: debootstrap bookworm from $mirror"
if ! debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  echo "base-image: debootstrap failed" >&2
  exit 1
fi
rm -f "$work/root/etc/apt/sources.list"
cat > "$work/root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*

tar -C "$work/root" --numeric-owner -cf "$work/root.tar" .
id=$(podman import --change "LABEL $label=$key" --change 'CMD ["bash"]' \
       "$work/root.tar" "${images[0]}")
podman tag "$id" "${images[1]}"
echo "base-image: built ${images[*]}"
