#!/usr/bin/env bash
# Build the sidecar-sizer OCI image from this checkout, offline, with Debian's buildah:
#   1. a static release binary (glibc, crt-static; no musl target is needed),
#   2. an image FROM scratch holding only that binary, the CA roots (for HTTPS to Prometheus)
#      and nothing else: no shell, no package manager; user 65532:65532;
#      ENTRYPOINT ["/sidecar-sizer"],
#   3. written as an OCI archive: target/image/sidecar-sizer-<version>.oci.tar, which
#      `docker load`, `podman load` and `kind load image-archive` accept.
# The archive is written to a temporary name and renamed at the end: a failed build leaves
# no half-written archive. The Containerfile describes the same image for docker users.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${IMAGE_NAME:-sidecar-sizer}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${IMAGE_TAG:-$version}
triple=$(rustc -vV | sed -n 's/^host: //p')
out=target/image
archive="$out/$name-$tag.oci.tar"
cargo=${CARGO:-cargo}

need_root() { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }
if ! command -v buildah >/dev/null; then
  if command -v apt-get >/dev/null && need_root; then
    echo "installing Debian's buildah (it builds the image without a daemon)"
    SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends buildah >/dev/null
  else
    echo "error: buildah is missing and cannot be installed here (needs apt-get and root);" >&2
    echo "       install buildah, or build with: docker build -f Containerfile ." >&2
    exit 1
  fi
fi
roots=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$roots" ]; then
  if command -v apt-get >/dev/null && need_root; then
    SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
  fi
  [ -s "$roots" ] || { echo "error: no CA roots at $roots (Debian package ca-certificates)" >&2; exit 1; }
fi

# A static binary: glibc linked in (crt-static). --target keeps build scripts and proc
# macros dynamic (they run on the build host) while the binary itself is static.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  "$cargo" build --locked --profile "${IMAGE_PROFILE:-release}" --target "$triple" --bin sidecar-sizer
bin="target/$triple/${IMAGE_PROFILE:-release}/sidecar-sizer"
# ldd prints "statically linked" (static-pie) or "not a dynamic executable" for static ones.
if ! ldd "$bin" 2>&1 | grep -qE "statically linked|not a dynamic executable"; then
  echo "error: $bin is dynamically linked: $(ldd "$bin" 2>&1 | head -n 3)" >&2
  exit 1
fi

mkdir -p "$out"
tmp=$(mktemp "$out/.$name-$tag.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# Containers here have no overlay filesystem or user namespaces: vfs storage, chroot isolation.
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs} BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
ctr=$(buildah from scratch)
cleanup() { buildah rm "$ctr" >/dev/null 2>&1 || true; rm -f "$tmp"; }
trap cleanup EXIT
buildah copy --chown 0:0 --chmod 0555 "$ctr" "$bin" /sidecar-sizer >/dev/null
buildah copy --chown 0:0 --chmod 0444 "$ctr" "$roots" /etc/ssl/certs/ca-certificates.crt >/dev/null
buildah config \
  --entrypoint '["/sidecar-sizer"]' --cmd '["serve"]' \
  --user 65532:65532 --workingdir / \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 8443 --port 8080 \
  --label org.opencontainers.image.title=sidecar-sizer \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.description="Mutating admission webhook that sizes Istio sidecars" \
  "$ctr"
buildah commit --quiet --format oci --rm "$ctr" "localhost/$name:$tag" >/dev/null
rm -f "$tmp"
buildah push --quiet "localhost/$name:$tag" "oci-archive:$tmp:$name:$tag"
mv -f "$tmp" "$archive"
trap - EXIT
buildah rmi "localhost/$name:$tag" >/dev/null 2>&1 || true
echo "$archive ($(du -h "$archive" | cut -f1)): $name:$tag"
