#!/usr/bin/env bash
# Builds the rocketmq-rust 1.0.0 name server and broker (pinned in Cargo.lock)
# inside this workspace, so they share every common dependency with the
# gateway's RocketMQ client, and builds the gateway in the same run.
# Prints the directory holding the binaries on stdout; cargo's output goes to stderr.
# `build.sh --release` builds with the release profile (deploy/Dockerfile).
#
# The broker is built with our fixes to its crates: patches/<crate>-<version>/
# holds each fix as a patch of that crate's source (why, in the patch and in
# docs/benchmarks.md). The patched copy is made once per set of patches beside
# the target directory and given to cargo as a [patch.crates-io] on the command
# line, so the workspace's own builds (cargo test) never see it. That patch
# rewrites the crate's line in Cargo.lock for the build; the file is put back
# afterwards, and the build fails if anything else in it moved.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
cd "$root"

patched_root="$CARGO_TARGET_DIR/patched-crates"
# `patch` is not in every minimal image (Debian's is "standard", not essential).
command -v patch >/dev/null || {
  echo "== installing patch (to apply deploy/rocketmq/patches)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patch >/dev/null
}
config=()
patched=0
for dir in "$here"/patches/*/; do
  [ -d "$dir" ] || continue
  crate_version=$(basename "$dir")            # e.g. rocketmq-store-1.0.0
  crate=${crate_version%-*}
  stamp=$(cat "$dir"*.patch | sha256sum | cut -d' ' -f1)
  dest="$patched_root/$crate_version"
  if [ "$(cat "$dest/.patches" 2>/dev/null)" != "$stamp" ]; then
    cargo fetch --locked >&2
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$crate_version" | head -n 1)
    [ -d "$src" ] || { echo "no source of $crate_version in cargo's registry" >&2; exit 1; }
    rm -rf "$dest" && mkdir -p "$patched_root"
    cp -r "$src" "$dest"
    for patch in "$dir"*.patch; do
      patch -s -p1 -d "$dest" <"$patch" >&2
    done
    echo "$stamp" >"$dest/.patches"
    echo "patched $crate_version with $(ls "$dir" | tr '\n' ' ')" >&2
  fi
  config+=(--config "patch.crates-io.$crate.path=\"$dest\"")
  patched=$((patched + 1))
done

saved="$CARGO_TARGET_DIR/Cargo.lock.unpatched"
cp Cargo.lock "$saved"
trap 'cp "$saved" "$root/Cargo.lock"' EXIT
profile=(); out=debug
if [ "${1:-}" = --release ]; then profile=(--release); out=release; fi
cargo build "${profile[@]}" "${config[@]}" -p rocketmq-servers -p rocketmq-namesrv -p rocketmq-broker \
  -p proxy --lib --bins >&2
# A patched crate loses its source and checksum lines; nothing else may change.
moved=$(diff "$saved" Cargo.lock | grep -c '^[<>]' || true)
if [ "$moved" -gt $((2 * patched)) ]; then
  echo "Cargo.lock changed beyond the patched crates during the build:" >&2
  diff "$saved" Cargo.lock >&2 || true
  exit 1
fi
echo "$CARGO_TARGET_DIR/$out"
