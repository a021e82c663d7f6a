#!/usr/bin/env bash
# Builds the stand-in's static helper binaries (vm-tests/helper: `standin`, run inside
# the guests, and `mock-infra`, run in the test namespace). musl when that target is
# installed, else a statically linked glibc build. Outputs: $WORK/bin/{standin,mock-infra}
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

need cargo "rustup/cargo"
src=$VM_TESTS_DIR/helper
hash=$(inputs_hash "$src/Cargo.toml" "$src/Cargo.lock" "$src/src" "$0")
stamp_ok helper "$hash" "$WORK/bin/standin" "$WORK/bin/mock-infra" && exit 0

if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    target=x86_64-unknown-linux-musl; rustflags=""
else
    target=x86_64-unknown-linux-gnu; rustflags="-C target-feature=+crt-static"
fi
log "building the stand-in helper ($target)"
export CARGO_TARGET_DIR=$WORK/helper-target
( cd "$src" && RUSTFLAGS="$rustflags" cargo build --release --locked --target "$target" --offline 2>/dev/null ) ||
    ( cd "$src" && RUSTFLAGS="$rustflags" cargo build --release --locked --target "$target" )
mkdir -p "$WORK/bin"
for b in standin mock-infra; do
    cp "$CARGO_TARGET_DIR/$target/release/$b" "$WORK/bin/$b"
    case "$(ldd "$WORK/bin/$b" 2>&1)" in *"not a dynamic"* | *statically*) ;; *) die "$b is not statically linked" ;; esac
done
stamp_set helper "$hash"
