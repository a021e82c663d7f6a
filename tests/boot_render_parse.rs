//! Parsing what the installer sends: the answer request's system information
//! (schema 1.0) and the post-installation webhook (schema 1.2), from the
//! documented examples and from hostile input.

use provisioning::boot::sysinfo::{
    BootMode, InstalledReport, MAX_BODY_BYTES, SysinfoError, SystemInfo,
};
use provisioning::mac::MacAddr;

/// The example from PROXMOX.md (schema 1.0).
const SYSINFO_EXAMPLE: &str = r#"{"$schema": {"version": "1.0"},
 "product": {"fullname": "Proxmox VE", "product": "pve", "enable_btrfs": true},
 "iso": {"release": "9.1", "isorelease": "1"},
 "dmi": {"system": {"name": "PowerEdge R640", "serial": "ABC1234", "sku": "SKU=NotProvided", "uuid": "4C4C4544-0039-3010-8048-B4C04F4E4B32"},
         "baseboard": {"name": "0H28RR", "serial": "/ABC1234/CNFCP0000000XX/", "asset_tag": ""},
         "chassis": {"serial": "ABC1234", "sku": "", "asset_tag": ""}},
 "network_interfaces": [{"link": "enp1s0", "mac": "58:47:ca:71:02:1e"},
                        {"link": "enp2s0", "mac": "58:47:CA:71:02:1F"}]}"#;

/// A post-installation webhook body shaped like proxmox-post-hook's
/// (schema 1.2, kebab-case).
const WEBHOOK_EXAMPLE: &str = r##"{
  "$schema": {"version": "1.2"},
  "debian-version": "13.1",
  "product": {"fullname": "Proxmox Virtual Environment", "short": "pve", "version": "9.1.1"},
  "iso": {"release": "9.1", "isorelease": "1"},
  "kernel-version": {"release": "6.17.2-1-pve", "sysname": "Linux", "version": "#1 SMP", "machine": "x86_64"},
  "boot-info": {"mode": "efi", "secureboot": false},
  "cpu-info": {"cores": 8, "cpus": 16, "flags": "fpu vme", "hvm": true, "model": "Xeon", "sockets": 1},
  "dmi": {"system": {"uuid": "4c4c4544-0039-3010-8048-b4c04f4e4b32", "serial": "ABC1234"}, "baseboard": {}, "chassis": {}},
  "filesystem": "zfs (RAID1)",
  "fqdn": "pve-01.lab.example.org",
  "machine-id": "3b1f1a4c3a9e4e0fa0c1c2f3e4d5a6b7",
  "disks": [{"size": 512110190592, "is-bootdisk": true, "udev-properties": {"DEVNAME": "/dev/nvme0n1"}}],
  "network-interfaces": [
    {"name": "enp1s0", "mac": "58:47:ca:71:02:1e", "address": "192.168.10.12/24", "is-management": true, "udev-properties": {"ID_NET_NAME_MAC": "enx5847ca71021e"}},
    {"name": "enp2s0", "mac": "58:47:ca:71:02:1f", "udev-properties": {}}
  ],
  "ssh-public-host-keys": {
    "ecdsa": "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBE= root@pve-01",
    "ed25519": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx0IRAf3dHdyzM5oJ0h4nO7X9Qc0u1mHkDDBDDWSKqX root@pve-01",
    "rsa": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC= root@pve-01"
  },
  "reboot-mode": "reboot"
}"##;

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

#[test]
fn parses_the_documented_system_information() {
    let info = SystemInfo::parse(SYSINFO_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(info.schema.as_ref().unwrap().version, "1.0");
    assert_eq!(info.product.as_ref().unwrap().product, "pve");
    assert_eq!(
        info.macs(),
        [mac("58:47:ca:71:02:1e"), mac("58:47:ca:71:02:1f")]
    );
    assert_eq!(
        info.dmi_uuid().as_deref(),
        Some("4c4c4544-0039-3010-8048-b4c04f4e4b32")
    );
    assert_eq!(info.dmi.system_serial(), Some("ABC1234"));
}

#[test]
fn system_information_is_lenient_where_it_may_grow() {
    // Unknown fields, missing optional parts, a junk MAC among good ones,
    // a placeholder UUID, non-string DMI values.
    let body = r#"{"$schema": {"version": "1.7"}, "new-thing": [1, 2],
        "dmi": {"system": {"uuid": "03000200-0400-0500-0006-000700080009", "sku": 5}},
        "network_interfaces": [{"link": "a", "mac": "not-a-mac"}, {"mac": "52-54-00-12-34-56", "speed": 1000},
                               {"link": "b", "mac": "52:54:00:12:34:56"}]}"#;
    let info = SystemInfo::parse(body.as_bytes()).unwrap();
    assert_eq!(info.macs(), [mac("52:54:00:12:34:56")]);
    assert_eq!(info.dmi_uuid(), None);
    let empty = SystemInfo::parse(b"{}").unwrap();
    assert!(empty.macs().is_empty());
    assert_eq!(empty.dmi_uuid(), None);
}

#[test]
fn system_information_refusals() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"{\"network_interfaces\": {}}", "object for array"),
        (
            b"{\"network_interfaces\": [{\"mac\": 5}]}",
            "number for mac",
        ),
        (b"{\"dmi\": \"x\"}", "string for dmi"),
        (
            b"{\"product\": {\"enable_btrfs\": \"yes\"}}",
            "string for bool",
        ),
        (b"{\"a\": \"\xff\xfe\"}", "invalid utf-8"),
        (b"{\"$schema\": ", "truncated"),
    ];
    for (body, what) in cases {
        assert!(
            matches!(SystemInfo::parse(body), Err(SysinfoError::Json(_))),
            "{what} must be refused"
        );
    }
    for body in [&b"[]"[..], b"null", b"\"x\"", b"5"] {
        assert!(matches!(
            SystemInfo::parse(body),
            Err(SysinfoError::NotAnObject)
        ));
    }
    let deep = "[".repeat(10_000);
    assert!(SystemInfo::parse(deep.as_bytes()).is_err(), "deep nesting");
    let big = format!(
        "{{\"network_interfaces\": [{}]}}",
        vec![r#"{"link":"x","mac":"52:54:00:12:34:56"}"#; 2000].join(",")
    );
    assert!(big.len() > MAX_BODY_BYTES);
    assert!(matches!(
        SystemInfo::parse(big.as_bytes()),
        Err(SysinfoError::TooLarge(_))
    ));
}

#[test]
fn parses_the_webhook_payload() {
    let r = InstalledReport::parse(WEBHOOK_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(r.fqdn, "pve-01.lab.example.org");
    assert_eq!(
        r.machine_id.as_deref(),
        Some("3b1f1a4c3a9e4e0fa0c1c2f3e4d5a6b7")
    );
    assert_eq!(r.boot_info.as_ref().unwrap().mode, BootMode::Efi);
    assert_eq!(
        r.management_address(),
        Some("192.168.10.12/24".parse().unwrap())
    );
    assert_eq!(r.management_mac(), Some(mac("58:47:ca:71:02:1e")));
    assert_eq!(
        r.dmi_uuid().as_deref(),
        Some("4c4c4544-0039-3010-8048-b4c04f4e4b32")
    );
    let keys = r.ssh_public_host_keys.present();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0].0, "ed25519");
    assert!(keys[0].1.starts_with("ssh-ed25519 AAAA"));
}

#[test]
fn webhook_minimal_and_refusals() {
    let minimal = r#"{"fqdn": "h.lan", "ssh-public-host-keys": {"ed25519": "ssh-ed25519 AAAA h"}, "extra": 1}"#;
    let r = InstalledReport::parse(minimal.as_bytes()).unwrap();
    assert_eq!(r.management_address(), None);
    assert_eq!(r.ssh_public_host_keys.present().len(), 1);

    let no_mgmt_address = WEBHOOK_EXAMPLE.replace("\"address\": \"192.168.10.12/24\", ", "");
    let r = InstalledReport::parse(no_mgmt_address.as_bytes()).unwrap();
    assert_eq!(r.management_address(), None);
    let bad_address = WEBHOOK_EXAMPLE.replace("192.168.10.12/24", "not-an-address");
    let r = InstalledReport::parse(bad_address.as_bytes()).unwrap();
    assert_eq!(r.management_address(), None);

    for (body, what) in [
        (r#"{"ssh-public-host-keys": {}}"#, "fqdn missing"),
        (r#"{"fqdn": "h.lan"}"#, "host keys missing"),
        (r#"{"fqdn": 1, "ssh-public-host-keys": {}}"#, "fqdn number"),
        (
            r#"{"fqdn": "h", "ssh-public-host-keys": {}, "boot-info": {"mode": "uefi"}}"#,
            "unknown boot mode",
        ),
        (
            r#"{"fqdn": "h", "ssh_public_host_keys": {}}"#,
            "snake_case keys",
        ),
    ] {
        assert!(
            InstalledReport::parse(body.as_bytes()).is_err(),
            "{what} must be refused"
        );
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,400}") {
        let _ = SystemInfo::parse(s.as_bytes());
        let _ = InstalledReport::parse(s.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = SystemInfo::parse(&b);
        let _ = InstalledReport::parse(&b);
    }

    #[test]
    fn json_shaped_input_never_panics(
        mac in "[0-9a-fA-F:\\-]{0,20}",
        uuid in "[0-9a-fA-F\\-]{0,40}",
        link in "\\PC{0,20}",
        addr in "[0-9a-f:./]{0,24}",
    ) {
        let body = serde_json::json!({
            "dmi": {"system": {"uuid": uuid}},
            "network_interfaces": [{"link": link, "mac": mac}],
        });
        if let Ok(info) = SystemInfo::parse(body.to_string().as_bytes()) {
            let _ = info.macs();
            let _ = info.dmi_uuid();
        }
        let report = serde_json::json!({
            "fqdn": "h.lan",
            "ssh-public-host-keys": {},
            "network-interfaces": [{"name": link, "mac": mac, "address": addr, "is-management": true}],
            "dmi": {"system": {"uuid": uuid}},
        });
        let r = InstalledReport::parse(report.to_string().as_bytes()).unwrap();
        let _ = r.management_address();
        let _ = r.management_mac();
        let _ = r.dmi_uuid();
    }
}
