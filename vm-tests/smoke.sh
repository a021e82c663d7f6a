#!/usr/bin/env bash
# Proves the boot chain WITHOUT the daemon: a proxy-DHCP dnsmasq (LAB.md options), a
# busybox httpd with a few CGI scripts (vm-tests/smoke/) standing in for the daemon's
# boot endpoints, and one QEMU machine per firmware (default: bios and efi, in
# parallel) that must PXE-boot, run the stand-in installer, reboot into its disk, run
# the first-boot hook, and serve SSH with the host key the webhook reported and
# the pvecm stand-in. Prints a timing table. Everything is removed on exit (trap).
#
# usage: vm-tests/smoke.sh [bios] [efi]     (root)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(bios efi)
eval "$("$VM_TESTS_DIR/prepare.sh")"
id=smoke$$
run=$WORK/runs/$id
rm -rf "$run"; mkdir -p "$run/state" "$run/www/cgi-bin" "$run/tftp"
declare -a qpids=()
cleanup() {
    local rc=$?
    for p in "${qpids[@]}"; do kill "$p" 2>/dev/null || true; done
    bash "$VM_TESTS_DIR/lib/netns.sh" down "$id"
    [ $rc = 0 ] || echo "smoke: FAILED (logs in $run)" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eval "$(bash "$VM_TESTS_DIR/lib/netns.sh" up "$id" "$run")"
port=8080
server=$SERVER_ADDR:$port
export SMOKE_STATE=$run/state SMOKE_SERVER=$server

# the web root: kernel, installer initrd, overlay, the prepared ISO, CGI scripts
www=$run/www
ln -s "$KERNEL" "$www/vmlinuz"
ln -s "$INSTALLER_INITRD" "$www/initrd.img"
# the repo's pxe-init overlay, packed like `provisioning overlay build` packs it
[ -x "$REPO_DIR/overlay/pxe-init" ] || die "missing $REPO_DIR/overlay/pxe-init"
(cd "$REPO_DIR/overlay" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$www/overlay.cpio.gz"
printf 'mode = "http"\n\n[http]\nurl = "http://%s/cgi-bin/answer"\n' "$server" >"$run/auto-installer-mode.toml"
uuid=$(xorriso -indev "$ISO" -report_system_area cmd 2>/dev/null | sed -n "s/^-volume_date uuid '\(.*\)'/\1/p")
xorriso -report_about WARNING -indev "$ISO" -outdev "$www/proxmox.iso" -boot_image any keep \
    -volume_date uuid "$uuid" -map "$run/auto-installer-mode.toml" /auto-installer-mode.toml 2>/dev/null
export SMOKE_ISO_SHA256
SMOKE_ISO_SHA256=$(sha256sum "$www/proxmox.iso" | cut -d' ' -f1)
cp "$VM_TESTS_DIR"/smoke/cgi-bin/* "$www/cgi-bin/"
sed "s/SMOKE_SERVER/$server/" "$VM_TESTS_DIR/smoke/first-boot.sh" >"$www/first-boot.sh"
ssh-keygen -q -t ed25519 -N '' -C ephemeral -f "$run/state/ephemeral"
ip netns exec "$NS_SERVER" busybox httpd -f -p "$server" -h "$www" &
cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/snponly.efi "$run/tftp/"
cat >"$run/proxy-dnsmasq.conf" <<EOF
port=0
interface=$BRIDGE
bind-interfaces
user=root
group=root
dhcp-range=${SUBNET%/*},proxy,255.255.255.0
enable-tftp
tftp-root=$run/tftp
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:ipxe,175
dhcp-match=set:bios,option:client-arch,0
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
pxe-prompt="smoke",0
pxe-service=tag:!ipxe,x86PC,"chain iPXE (BIOS)",undionly.kpxe
pxe-service=tag:!ipxe,X86-64_EFI,"chain iPXE (UEFI)",snponly.efi
dhcp-boot=tag:ipxe,http://$server/cgi-bin/ipxe?mac=\${mac:hexhyp},,$SERVER_ADDR
log-dhcp
log-facility=$run/proxy-dnsmasq.log
EOF
ip netns exec "$NS_SERVER" dnsmasq --conf-file="$run/proxy-dnsmasq.conf" --keep-in-foreground &

# the machines
declare -A t0 mac_of
i=0
for mode in "${modes[@]}"; do
    i=$((i + 1))
    name=$mode-$i mac=52:54:00:5e:00:0$i
    mac_of[$name]=$mac
    bash "$VM_TESTS_DIR/lib/netns.sh" tap "$id" "tap$i"
    t0[$name]=$(date +%s.%N)
    bash "$VM_TESTS_DIR/lib/qemu.sh" "$NS_SERVER" "$name" "$mode" "$mac" "tap$i" "$run/$name.raw" "$DISK_MIB" \
        "$run" "$(cat /proc/sys/kernel/random/uuid)" &
    qpids+=($!)
done

# wait for each machine's milestones on its serial console
markers=("pxe-init: attempt 1" "standin-installer: start" "standin-installer: webhook sent" "standin-installed: start"
    "standin-installed: ssh ready" "standin-installed: first-boot hook done")
labels=("pxe-init" "installer" "installed" "disk-boot" "ssh" "first-boot")
declare -A seen
deadline=$(( $(date +%s) + 300 ))
while :; do
    pending=0
    for name in "${!mac_of[@]}"; do
        for k in "${!markers[@]}"; do
            [ -n "${seen[$name.$k]:-}" ] && continue
            if grep -qF "${markers[$k]}" "$run/$name.serial" 2>/dev/null; then
                seen[$name.$k]=$(awk -v a="$(date +%s.%N)" -v b="${t0[$name]}" 'BEGIN { printf "%.1f", a - b }')
                echo "smoke: $name ${labels[$k]} at ${seen[$name.$k]} s" >&2
            else
                pending=1
            fi
        done
    done
    [ $pending = 0 ] && break
    [ "$(date +%s)" -lt $deadline ] || die "timed out; serial logs: $run/*.serial"
    sleep 0.2
done

# the installed systems: SSH with the reported host key and the observer key; pvecm
for name in "${!mac_of[@]}"; do
    mac=${mac_of[$name]}
    ip=$(awk -v m="$mac" '$2 == m {print $3}' "$LEASES" | tail -n1)
    [ -n "$ip" ] || die "$name: no lease for $mac"
    hk=$(jq -r '."ssh-public-host-keys".ed25519' "$run/state/webhook-$mac.json")
    echo "$ip $hk" >"$run/known_hosts-$name"
    sshc=(ip netns exec "$NS_SERVER" ssh -o BatchMode=yes -o StrictHostKeyChecking=yes
        -o UserKnownHostsFile="$run/known_hosts-$name" -o ConnectTimeout=10)
    "${sshc[@]}" -i "$run/state/ephemeral" "root@$ip" 'hostname; cat /etc/pve/corosync.conf 2>/dev/null; true' ||
        die "$name: SSH with the ephemeral key and the pinned host key failed"
    . "$VM_TESTS_DIR/standin/join.conf"
    echo "$EXPECTED_PASSWORD" | "${sshc[@]}" -i "$run/state/ephemeral" "root@$ip" \
        pvecm add "$EXPECTED_NODE" --fingerprint "$EXPECTED_FINGERPRINT" || die "$name: pvecm add failed"
    "${sshc[@]}" -i "$OBSERVER_KEY" "root@$ip" \
        'test -L /root/.ssh/authorized_keys && grep -q ephemeral /etc/pve/priv/authorized_keys && test -f /etc/pve/corosync.conf' ||
        die "$name: the join did not link authorized_keys into /etc/pve/priv"
    grep -q "phone-home.*$(jq -r '.dmi.system.uuid' "$run/state/sysinfo-$mac.json")" "$run/state/events" ||
        die "$name: no phone-home with the machine's DMI uuid"
    echo "smoke: $name OK ($ip)" >&2
done

printf '\n%-8s' machine; for l in "${labels[@]}"; do printf '%11s' "$l"; done; echo
for name in "${!mac_of[@]}"; do
    printf '%-8s' "$name"; for k in "${!markers[@]}"; do printf '%11s' "${seen[$name.$k]}"; done; echo
done
echo "(seconds from QEMU start; TCG)"
