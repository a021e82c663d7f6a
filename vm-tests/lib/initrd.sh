# shellcheck shell=bash
# Helpers shared by the two stand-in initrd builders: a busybox root with applet links,
# the kernel modules (with a busybox-generated modules.dep), and the newc packer.
# Sourced after lib/common.sh.

# busybox_root ROOT: static busybox with every applet linked (never over busybox itself
# or over a file that is already there).
busybox_root() {
    local root=$1 bb=/bin/busybox
    [ -x $bb ] || bb=/usr/bin/busybox
    need_file $bb busybox-static
    case "$(ldd "$bb" 2>&1)" in *"not a dynamic"* | *statically*) ;; *) die "$bb is dynamically linked: install busybox-static" ;; esac
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,root,var/log,usr/share/udhcpc}
    cp "$bb" "$root/bin/busybox"
    local a
    for a in $("$bb" --list-full); do
        case "$a" in */busybox) continue ;; esac
        [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
    done
    cp "$VM_TESTS_DIR/standin/udhcpc.script" "$root/usr/share/udhcpc/default.script"
    chmod 755 "$root/usr/share/udhcpc/default.script"
}

# add_modules ROOT MODULE...: copy the named modules from the extracted Debian kernel,
# keeping their tree paths, and generate modules.dep with busybox depmod.
add_modules() {
    local root=$1; shift
    local ver src m f
    ver=$(cat "$WORK/kernel/version")
    src=$WORK/kernel/root/lib/modules/$ver
    for m in "$@"; do
        f=$(find "$src/kernel" -name "$m.ko*" | head -n1)
        [ -n "$f" ] || die "kernel module $m not found in $src"
        mkdir -p "$root/lib/modules/$ver/$(dirname "${f#"$src"/}")"
        cp "$f" "$root/lib/modules/$ver/${f#"$src"/}"
    done
    busybox depmod -b "$root" "$ver"
}

# pack_newc ROOT OUT.gz [OUT.zst]: newc cpio, owned by root, gzip (and zstd).
pack_newc() {
    local root=$1 gz=$2 zst=${3:-}
    ( cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) >"$gz.cpio"
    gzip -9n <"$gz.cpio" >"$gz"
    if [ -n "$zst" ]; then zstd -q -19 -f "$gz.cpio" -o "$zst"; fi
    rm -f "$gz.cpio"
}

# shellcheck disable=SC2034 # used by the scripts that source this file
STANDIN_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    failover net_failover virtio_net virtio_blk loop cdrom isofs fat vfat nls_cp437 nls_ascii qemu_fw_cfg)
