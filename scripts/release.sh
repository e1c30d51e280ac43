#!/usr/bin/env bash
# Release archives: make release VERSION=vX.Y.Z (this script does the work).
#
# Writes to $DIST (default dist/):
#   vramcram_X.Y.Z_linux_amd64.tar.gz
#   vramcram_X.Y.Z_linux_arm64.tar.gz
#   SHA256SUMS
# Each archive holds one directory vramcram_X.Y.Z_linux_ARCH/ with the
# binary, config.example.yaml, vramcram.service, install.sh, README.md and
# LICENSE (when the repository has one).
#
# Both binaries are cgo builds (go-nvml; NVML itself is opened at run time
# with dlopen), so they need glibc and nothing else. arm64 is cross-compiled
# with Debian's gcc-aarch64-linux-gnu (ARM64_CC).
#
# Reproducible: the same commit gives the same bytes. -trimpath, no VCS
# stamp, an empty build ID, fixed GOAMD64/GOARM64, and archives with sorted
# entries, owner 0:0, fixed modes and every mtime at SOURCE_DATE_EPOCH (the
# commit's time unless set), gzip -n.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DIST=${DIST:-dist}
AMD64_CC=${AMD64_CC:-gcc}
ARM64_CC=${ARM64_CC:-aarch64-linux-gnu-gcc}
VERSION=${VERSION:-}

die() { echo "release: $*" >&2; exit 1; }

[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
  die "VERSION=${VERSION:-(unset)}: want vX.Y.Z, e.g. make release VERSION=v1.2.3"
for tool in "$AMD64_CC" "$ARM64_CC" tar gzip sha256sum git; do
  command -v "$tool" >/dev/null || die "$tool not found (arm64 needs: apt-get install gcc-aarch64-linux-gnu)"
done

COMMIT=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "release: warning: the work tree has uncommitted changes; the archives are not those of $COMMIT" >&2
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
NUM=${VERSION#v}
# go-nvml's header marks some functions deprecated; those warnings are noise.
export CGO_CFLAGS=${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}

mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

archives=()
for arch in amd64 arm64; do
  name=vramcram_${NUM}_linux_${arch}
  dir=$stage/$name
  mkdir -p "$dir"
  cc=$AMD64_CC
  [ "$arch" = arm64 ] && cc=$ARM64_CC
  echo "release: building $name"
  CGO_ENABLED=1 GOOS=linux GOARCH=$arch GOAMD64=v1 GOARM64=v8.0 CC=$cc \
    "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w -buildid= -X main.version=$VERSION -X main.commit=$COMMIT" \
    -o "$dir/vramcram" .
  install -m 0644 config.example.yaml config.schema.json README.md "$dir/"
  install -m 0644 deploy/systemd/vramcram.service "$dir/"
  install -m 0755 scripts/install.sh "$dir/"
  if [ -f LICENSE ]; then
    install -m 0644 LICENSE "$dir/"
  else
    echo "release: warning: no LICENSE file in the repository; the archives have none" >&2
  fi
  chmod 0755 "$dir" "$dir/vramcram"
  tar --create --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" --directory="$stage" "$name" |
    gzip -n -9 >"$DIST/$name.tar.gz"
  archives+=("$name.tar.gz")
done

(cd "$DIST" && sha256sum "${archives[@]}" >SHA256SUMS)
echo "release: $VERSION ($COMMIT) in $DIST:"
cat "$DIST/SHA256SUMS"
