//! Wake-on-LAN: builds the magic packet for a MAC and sends it as one UDP
//! broadcast, optionally pinned to an interface with `SO_BINDTODEVICE` so the
//! packet leaves through the PXE network and nowhere else.
//!
//! This module only sends; it never decides *when* to wake a machine (the
//! reconciler does that when a rebuild starts) and never records anything.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use crate::mac::MacAddr;

/// Length of a magic packet: 6 bytes of `0xff`, then the MAC 16 times.
pub const MAGIC_PACKET_LEN: usize = 6 + 16 * 6;

/// The conventional destination: the limited broadcast address, port 9
/// ("discard").
pub const DEFAULT_BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 9);

#[derive(Debug, thiserror::Error)]
pub enum WolError {
    #[error("invalid interface name {0:?}: 1 to 15 characters of [A-Za-z0-9_.-]")]
    InvalidInterface(String),
    #[error("cannot open a udp socket for wake-on-lan")]
    Socket(#[source] std::io::Error),
    #[error("cannot enable broadcast on the wake-on-lan socket")]
    Broadcast(#[source] std::io::Error),
    #[error("cannot bind the wake-on-lan socket to interface {interface}")]
    BindToDevice {
        interface: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot send the magic packet to {target}")]
    Send {
        target: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("short send of the magic packet to {target}: {sent} of {MAGIC_PACKET_LEN} bytes")]
    ShortSend { target: SocketAddrV4, sent: usize },
}

/// The 102-byte magic packet for `mac`.
pub fn magic_packet(mac: MacAddr) -> [u8; MAGIC_PACKET_LEN] {
    let mut packet = [0xffu8; MAGIC_PACKET_LEN];
    for chunk in packet[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.octets());
    }
    packet
}

/// True for a name the kernel accepts as an interface name (`IFNAMSIZ` - 1
/// bytes, no `/`, no whitespace). Shared with the dnsmasq renderer's rules.
pub(crate) fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Sends the magic packet for `mac` to `broadcast` (normally
/// [`DEFAULT_BROADCAST`]). With `bind_interface`, the socket is bound to that
/// interface so the broadcast goes out there (needs `CAP_NET_RAW`).
pub fn send(
    mac: MacAddr,
    broadcast: SocketAddrV4,
    bind_interface: Option<&str>,
) -> Result<(), WolError> {
    if let Some(ifname) = bind_interface
        && !valid_interface_name(ifname)
    {
        return Err(WolError::InvalidInterface(
            ifname.chars().take(32).collect(),
        ));
    }
    let socket =
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).map_err(WolError::Socket)?;
    socket.set_broadcast(true).map_err(WolError::Broadcast)?;
    if let Some(ifname) = bind_interface {
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::BindToDevice,
            &std::ffi::OsString::from(ifname),
        )
        .map_err(|source| WolError::BindToDevice {
            interface: ifname.to_owned(),
            source,
        })?;
    }
    let packet = magic_packet(mac);
    let sent = socket
        .send_to(&packet, broadcast)
        .map_err(|source| WolError::Send {
            target: broadcast,
            source,
        })?;
    if sent != packet.len() {
        return Err(WolError::ShortSend {
            target: broadcast,
            sent,
        });
    }
    tracing::info!(mac = %mac, target = %broadcast, interface = bind_interface.unwrap_or("-"), "sent wake-on-lan magic packet");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_is_sync_stream_then_sixteen_macs() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(
                &p[6 + i * 6..12 + i * 6],
                &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
                "repetition {i}"
            );
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "br-pxe", "enp1s0f1", "veth.10", "a"] {
            assert!(valid_interface_name(ok), "{ok}");
        }
        for bad in ["", "..", ".", "a/b", "eth 0", "0123456789abcdef", "eth0\n"] {
            assert!(!valid_interface_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_interface_before_touching_the_network() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let err = send(mac, DEFAULT_BROADCAST, Some("eth0\nx")).unwrap_err();
        assert!(matches!(err, WolError::InvalidInterface(_)));
    }
}
