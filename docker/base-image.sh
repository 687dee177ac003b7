#!/usr/bin/env bash
# Make a local base image for docker/Dockerfile where registry images cannot be pulled
# (CI machines, air-gapped hosts): Debian bookworm from Debian's own package archive, with
# its Python 3.11 (python3, python3-venv, python-is-python3) and this machine's CA bundle.
#
#   docker/base-image.sh [TAG]          default TAG: gpp-cubes-base:bookworm
#   docker build --network host --build-arg BASE_IMAGE=gpp-cubes-base:bookworm \
#       -f docker/Dockerfile -t gpp-cubes:cpu .
#
# Idempotent: when TAG exists and was made from the same recipe (this script, the CA bundle
# and the pip index settings, recorded in the image label org.gpp-cubes.base-recipe), nothing
# is done. FORCE=1 remakes it. Needs root, debootstrap and a reachable Debian mirror
# (DEBIAN_MIRROR, default http://deb.debian.org/debian); takes ~1 min, ~265 MB.
#
# Why the CA bundle: pip inside a build container reaches the package index only when it
# trusts the same certificate authorities as this machine (a TLS-inspecting proxy adds its
# own). The bundle is copied to the standard Debian path and PIP_CERT / SSL_CERT_FILE /
# REQUESTS_CA_BUNDLE point at it. The pip index this machine uses (PIP_INDEX_URL or pip's
# global.index-url) is kept too; a URL with credentials in it is refused (it would be stored
# in the image), and file:// indexes are left out (they are not inside the container).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-gpp-cubes-base:bookworm}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
packages=python3,python3-venv,python-is-python3

die() { echo "base-image.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker (the client) is not on PATH"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (start dockerd first)"
[ -r "$ca_bundle" ] || die "CA bundle $ca_bundle not readable (set CA_BUNDLE)"

# The index settings of this machine's pip, as http(s) URLs only.
pip_cfg() { python3 -m pip config get "$1" 2>/dev/null || true; }
index_url=${PIP_INDEX_URL:-$(pip_cfg global.index-url)}
extra_urls=${PIP_EXTRA_INDEX_URL:-$(pip_cfg global.extra-index-url)}
keep_http() { tr ' ' '\n' | { grep -E '^https?://' || true; } | tr '\n' ' ' | sed 's/ $//'; }
index_url=$(printf '%s' "$index_url" | keep_http)
extra_urls=$(printf '%s' "$extra_urls" | keep_http)
case "$index_url $extra_urls" in
    *://*@*) die "the pip index URL holds credentials; they would be stored in the image" ;;
esac

recipe=$( { cat "$0"; cat "$ca_bundle"; echo "$suite $mirror $packages $index_url $extra_urls"; } \
    | sha256sum | cut -c1-16)
if [ -z "${FORCE:-}" ] && \
   [ "$(docker image inspect -f '{{index .Config.Labels "org.gpp-cubes.base-recipe"}}' \
        "$tag" 2>/dev/null)" = "$recipe" ]; then
    echo "base-image.sh: $tag is up to date (recipe $recipe)"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

root=$(mktemp -d /var/tmp/gpp-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
t0=$(date +%s)
echo "base-image.sh: debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed"; }
rm -f "$root.log"

# The suites the official Debian image has, so `apt-get install` in the Dockerfile gets
# bookworm's updates and security fixes too.
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
install -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*

cert=/etc/ssl/certs/ca-certificates.crt
changes=(
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --change "ENV LANG=C.UTF-8"
    --change "ENV PIP_CERT=$cert SSL_CERT_FILE=$cert REQUESTS_CA_BUNDLE=$cert"
    --change "LABEL org.gpp-cubes.base-recipe=$recipe"
    --change 'CMD ["python3"]'
)
[ -n "$index_url" ] && changes+=(--change "ENV PIP_INDEX_URL=$index_url")
[ -n "$extra_urls" ] && changes+=(--change "ENV PIP_EXTRA_INDEX_URL=\"$extra_urls\"")

tar -C "$root" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "base-image.sh: made $tag ($((size / 1000000)) MB, recipe $recipe) in $(( $(date +%s) - t0 )) s"
