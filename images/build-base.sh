#!/bin/sh
# Build zlab's own base image without any container registry:
# debootstrap a minimal Debian, tar the root file system, `docker import` it.
#
#   images/build-base.sh TAG PACKAGE...
#
# lab/image.py calls this with the package list it hashes into TAG; run it by
# hand only to rebuild a base. Needs root (debootstrap chroots), debootstrap,
# docker, and a reachable Debian mirror: the one this machine's own apt uses
# (ZLAB_DEBIAN_MIRROR overrides it).
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

# The Debian archive this machine's apt is set up with: a deb822 stanza whose
# Suites name $suite, else a sources.list line for it, else any archive that
# is not the security one (the same archive serves every suite).
apt_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$suite" 'BEGIN { RS = "" }
            { uri = ""; ok = 0; n = split($0, l, "\n")
              for (i = 1; i <= n; i++) {
                  if (l[i] ~ /^URIs:/) { split(l[i], a, " "); uri = a[2] }
                  if (l[i] ~ /^Suites:/) { k = split(l[i], b, " "); for (j = 2; j <= k; j++) if (b[j] == s) ok = 1 }
              }
              if (ok && uri != "") { print uri; exit } }' "$f"
    done | head -n 1
    if [ -f /etc/apt/sources.list ]; then
        sed -n 's/\[[^]]*\]//; /^deb[[:space:]]/p' /etc/apt/sources.list | awk -v s="$suite" '$3 == s { print $2; exit }'
    fi
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -Eo '(https?|file)://[^ ]*/debian/?( |$)' | head -n 1
}
mirror=${ZLAB_DEBIAN_MIRROR:-$(apt_mirror | head -n 1 | tr -d ' ')}
if [ -z "$mirror" ]; then
    echo "zlab: no Debian archive for $suite in this machine's apt sources: set ZLAB_DEBIAN_MIRROR" >&2
    exit 1
fi

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
