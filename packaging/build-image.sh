#!/usr/bin/env bash
# Builds the container image `tokenkeeper:VERSION` (and `tokenkeeper:latest`) FROM scratch:
# a static binary (glibc, statically linked: no download of another target needed), the host's
# CA bundle, and the passwd/group of packaging/container/. Needs podman (or BUILDER=buildah).
#   packaging/build-image.sh [IMAGE_NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-tokenkeeper}"
builder="${BUILDER:-podman}"
target="$(rustc -vV | sed -n 's/^host: //p')"
# Static only for the target: build scripts and proc macros stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release --target "$target"
binary="target/$target/release/tokenkeeper"
# A dynamic binary lists the libraries it needs ("libc.so.6 => …"); a static one none.
if ldd "$binary" 2>&1 | grep -q "=>"; then
    echo "error: $binary is not static" >&2
    exit 1
fi
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/tokenkeeper"
cp /etc/ssl/certs/ca-certificates.crt "$context/"
cp packaging/container/passwd packaging/container/group packaging/Containerfile "$context/"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
case "$builder" in
    buildah) buildah bud --layers=false -f "$context/Containerfile" -t "$name:$version" -t "$name:latest" "$context" ;;
    *) "$builder" build -f "$context/Containerfile" -t "$name:$version" -t "$name:latest" "$context" ;;
esac
echo "built $name:$version"
