# shellcheck shell=bash
# Shared helpers for the end-to-end harness scripts: paths, logging, loud failure.
# Sourced, never executed. Owns no state of its own.

VM_TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$VM_TESTS_DIR/.." && pwd)
WORK=${VM_TESTS_WORK:-$VM_TESTS_DIR/work}
export VM_TESTS_DIR REPO_DIR WORK

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'vm-tests: error: %s\n' "$*" >&2; exit 1; }

# need CMD PACKAGE: fail loudly, naming the Debian package that provides CMD.
need() { command -v "$1" >/dev/null 2>&1 || die "missing command '$1' (Debian package: $2)"; }

# need_file PATH PACKAGE
need_file() { [ -e "$1" ] || die "missing file $1 (Debian package: $2)"; }

# stamp_ok NAME HASH OUTPUT...: true when step NAME was built from inputs HASH and
# all its outputs exist. When false, the stamp is removed before the caller rebuilds,
# so a build that is interrupted half-way is never taken for a finished one.
stamp_ok() {
    local name=$1 hash=$2; shift 2
    local ok=1 f
    [ -f "$WORK/stamps/$name" ] && [ "$(cat "$WORK/stamps/$name")" = "$hash" ] || ok=0
    for f in "$@"; do [ -e "$f" ] || ok=0; done
    [ $ok = 1 ] && return 0
    rm -f "$WORK/stamps/$name"
    return 1
}
stamp_set() { mkdir -p "$WORK/stamps"; printf '%s\n' "$2" >"$WORK/stamps/$1"; }

# inputs_hash FILE...: one hash over the contents of the given files/directories.
inputs_hash() {
    find "$@" -type f -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha256sum | cut -d' ' -f1 | sha256sum | cut -c1-16
}

# copy_with_libs ROOT BINARY...: copy dynamically linked binaries and the shared
# libraries ldd reports (plus the loader) into ROOT, keeping their paths.
copy_with_libs() {
    local root=$1; shift
    local bin lib
    for bin in "$@"; do
        [ -x "$bin" ] || die "missing binary $bin"
        mkdir -p "$root$(dirname "$bin")"
        cp -L "$bin" "$root$bin"
        for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+'); do
            mkdir -p "$root$(dirname "$lib")"
            cp -Ln "$lib" "$root$lib"
        done
    done
}
