//! Wake-on-LAN on the wire: the magic packet is broadcast from one network
//! namespace through a veth pair and captured by a UDP socket in another.
//!
//! The two helper "tests" below are `#[ignore]`d entry points that the real
//! test runs inside the namespaces (`ip netns exec <ns> <this binary>
//! --ignored --exact <helper>`), since a process enters a namespace most
//! simply by being started in it.

mod boot_infra_support;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use boot_infra_support::{Netns, unique_suffix, veth_between};
use provisioning::boot::wol;
use provisioning::mac::MacAddr;

const MAC: &str = "52:54:00:ab:cd:ef";

fn helper(ns: &Netns, name: &str) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = ns.command(exe);
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

#[test]
fn magic_packet_crosses_a_veth_as_broadcast() {
    let sender = Netns::new();
    let receiver = Netns::new();
    let sfx = unique_suffix();
    let (ifa, ifb) = (format!("pw{sfx}a"), format!("pw{sfx}b"));
    veth_between(
        &sender,
        &ifa,
        "10.231.7.1/24",
        &receiver,
        &ifb,
        "10.231.7.2/24",
    );

    let mut recv = helper(&receiver, "helper_receive_magic_packet")
        .env("PROVTEST_WOL_IFACE", &ifb)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(recv.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("receiver exited before it was ready")
            .unwrap();
        // The harness prints "test <name> ... " before our output.
        if line.ends_with("READY") {
            break;
        }
    }

    let out = helper(&sender, "helper_send_magic_packet")
        .env("PROVTEST_WOL_IFACE", &ifa)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sender failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut got = None;
    for line in lines {
        let line = line.unwrap();
        if let Some((_, rest)) = line.split_once("PACKET ") {
            got = Some(rest.to_owned());
        }
    }
    assert!(recv.wait().unwrap().success(), "receiver failed");
    let got = got.expect("receiver printed no packet");
    let (from, hex_payload) = got.split_once(' ').unwrap();
    assert!(from.starts_with("10.231.7.1:"), "packet came from {from}");
    let mac: MacAddr = MAC.parse().unwrap();
    assert_eq!(hex_payload, hex::encode(wol::magic_packet(mac)));
}

#[test]
#[ignore = "helper: runs inside the sender namespace"]
fn helper_send_magic_packet() {
    let iface = std::env::var("PROVTEST_WOL_IFACE").unwrap();
    wol::send(MAC.parse().unwrap(), wol::DEFAULT_BROADCAST, Some(&iface)).unwrap();
}

#[test]
#[ignore = "helper: runs inside the receiver namespace"]
fn helper_receive_magic_packet() {
    let iface = std::env::var("PROVTEST_WOL_IFACE").unwrap();
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9)).unwrap();
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(iface),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    println!("READY");
    let mut buf = [0u8; 1500];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    println!("PACKET {from} {}", hex::encode(&buf[..n]));
}
