#!/usr/bin/env bash
# Installs the Debian packages the end-to-end harness needs, when missing (apt-get
# update first). Never removes or upgrades anything.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

PACKAGES=(qemu-system-x86 ipxe-qemu ipxe ovmf dnsmasq-base busybox-static cpio
    iproute2 syslinux syslinux-common mtools dosfstools fdisk xorriso zstd dropbear-bin
    openssh-client curl jq bash gzip)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing Debian packages (${missing[*]}) and not root to install them"
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
