#!/bin/sh
# Build zlab's own base image without any container registry:
# debootstrap a minimal Debian, tar the root file system, `docker import` it.
#
#   images/build-base.sh TAG PACKAGE...
#
# lab/image.py calls this with the package list it hashes into TAG; run it by
# hand only to rebuild a base. Needs root (debootstrap chroots), debootstrap,
# docker, and a reachable Debian mirror (ZLAB_DEBIAN_MIRROR overrides it).
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 TAG PACKAGE..." >&2
    exit 2
fi
tag=$1
shift
# --include takes a comma list; virtual packages are not resolved, so the
# caller names real ones (python3-cffi-backend, not the -api virtual).
include=$(echo "$@" | tr ' ' ',')
suite=${ZLAB_DEBIAN_SUITE:-bookworm}
mirror=${ZLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}

root=$(mktemp -d "${TMPDIR:-/var/tmp}/zlab-base.XXXXXX")
# The rootfs holds device nodes and root-owned files: always remove it.
trap 'rm -rf "$root"' EXIT INT TERM

echo "zlab: debootstrap $suite (minbase) + $include"
debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"

# Shrink: package caches, lists and docs are not needed at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
       "$root"/var/log/*.log "$root"/tmp/*

echo "zlab: docker import -> $tag"
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/sh"]' \
    --message "zlab base: debootstrap $suite minbase + $include" \
    - "$tag" >/dev/null
echo "zlab: built $tag"
