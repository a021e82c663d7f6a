#!/usr/bin/env bash
# The test network: two network namespaces per run, nothing else.
#   server ns  "pvs-<id>": bridge br0 (STP off, forward delay 0) with $SERVER_ADDR, one
#              tap per QEMU machine, and one end of a veth; the daemon, its dnsmasq, the
#              mock services and QEMU run in here.
#   router ns  "pvr-<id>": the veth's other end (eth0, $ROUTER_ADDR) and a plain dnsmasq
#              handing out leases like a home router (--no-ping) with IPv6 router
#              advertisements (iPXE waits 16 s without them).
# No default route, no link to the host: every packet stays inside these namespaces.
# Names are unique per run id, so parallel runs do not clash.
#
# usage:
#   netns.sh up   <id> <run-dir>      create; prints KEY=VALUE lines
#   netns.sh tap  <id> <tap-name>     add a tap to the bridge
#   netns.sh down <id>                kill every process in the two namespaces, delete them
# Needs root (ip netns).
set -euo pipefail

SUBNET_PREFIX=10.77.0
SERVER_ADDR=$SUBNET_PREFIX.1
ROUTER_ADDR=$SUBNET_PREFIX.254

die() { echo "netns.sh: error: $*" >&2; exit 1; }
ns_names() { NS_SERVER="pvs-$1"; NS_ROUTER="pvr-$1"; }

up() {
    local id=$1 dir=$2
    ns_names "$id"
    [ "$(id -u)" = 0 ] || die "must run as root (ip netns add)"
    command -v dnsmasq >/dev/null || die "missing dnsmasq (Debian package: dnsmasq-base)"
    [ -c /dev/net/tun ] || die "missing /dev/net/tun (QEMU tap networking)"
    mkdir -p "$dir"
    ip netns add "$NS_SERVER"
    ip netns add "$NS_ROUTER"
    local S=(ip -n "$NS_SERVER") R=(ip -n "$NS_ROUTER")
    "${S[@]}" link set lo up
    "${R[@]}" link set lo up
    "${S[@]}" link add br0 type bridge stp_state 0 forward_delay 0
    "${S[@]}" addr add "$SERVER_ADDR/24" dev br0
    "${S[@]}" link set br0 up
    "${S[@]}" link add veth-router type veth peer name eth0 netns "$NS_ROUTER"
    "${S[@]}" link set veth-router master br0 up
    "${R[@]}" addr add "$ROUTER_ADDR/24" dev eth0
    "${R[@]}" addr add fd77::fe/64 dev eth0 nodad
    "${R[@]}" link set eth0 up
    ip netns exec "$NS_ROUTER" dnsmasq --conf-file=/dev/null --port=0 --interface=eth0 --bind-interfaces \
        --user=root --group=root \
        --dhcp-range="$SUBNET_PREFIX.100,$SUBNET_PREFIX.199,255.255.255.0,1h" --no-ping --dhcp-authoritative \
        --dhcp-option=option:router,"$ROUTER_ADDR" \
        --enable-ra --dhcp-range=::,constructor:eth0,ra-only \
        --dhcp-leasefile="$dir/router.leases" --pid-file="$dir/router-dnsmasq.pid" \
        --log-dhcp --log-facility="$dir/router-dnsmasq.log" ||
        die "router dnsmasq failed to start (see $dir/router-dnsmasq.log)"
    cat <<EOF
NS_SERVER=$NS_SERVER
NS_ROUTER=$NS_ROUTER
BRIDGE=br0
SERVER_ADDR=$SERVER_ADDR
ROUTER_ADDR=$ROUTER_ADDR
SUBNET=$SUBNET_PREFIX.0/24
LEASES=$dir/router.leases
EOF
}

tap() {
    local id=$1 name=$2
    ns_names "$id"
    ip -n "$NS_SERVER" tuntap add dev "$name" mode tap
    ip -n "$NS_SERVER" link set "$name" master br0 up
}

down() {
    local id=$1 ns pids
    ns_names "$id"
    for ns in "$NS_SERVER" "$NS_ROUTER"; do
        ip netns list | grep -qw "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
    done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$( (ip netns pids "$NS_SERVER"; ip netns pids "$NS_ROUTER") 2>/dev/null || true)
        [ -z "$pids" ] && break
        sleep 0.3
    done
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    ip netns del "$NS_SERVER" 2>/dev/null || true
    ip netns del "$NS_ROUTER" 2>/dev/null || true
}

case "${1:-}" in
up) [ $# = 3 ] || die "usage: netns.sh up <id> <run-dir>"; up "$2" "$3" ;;
tap) [ $# = 3 ] || die "usage: netns.sh tap <id> <tap-name>"; tap "$2" "$3" ;;
down) [ $# = 2 ] || die "usage: netns.sh down <id>"; down "$2" ;;
*) die "usage: netns.sh up|tap|down ..." ;;
esac
