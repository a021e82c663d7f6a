//! The KDL grammar and its diagnostics, table-driven: each case is one
//! `hosts.d` file run through `run_check`, and the exact compiler-style
//! output is an insta snapshot.

use provisioning::check::{CheckFormat, run_check};
use provisioning::decl::kdl::parse_kdl;
use std::path::Path;

/// A server-type file every case can rely on.
const TYPES: &str = r#"
server-type "ms-01" {
    boot-disk "nvme0n1"
}
"#;

/// Runs `provisioning check` on a directory holding `types.kdl` and `a.kdl`
/// with `input`; returns the report with the temp path stripped.
fn check_output(input: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hosts.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.kdl"), input).unwrap();
    std::fs::write(dir.join("types.kdl"), TYPES).unwrap();
    let mut out = Vec::new();
    let valid = run_check(&dir, None, CheckFormat::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let prefix = format!("{}/", tmp.path().display());
    (valid, text.replace(&prefix, ""))
}

fn check(name: &str, input: &str, expect_valid: bool) {
    let (valid, out) = check_output(input);
    assert_eq!(valid, expect_valid, "case {name}:\n{out}");
    insta::assert_snapshot!(name, out, input);
}

#[test]
fn bad_inputs() {
    let cases: &[(&str, &str)] = &[
        (
            "syntax_unclosed_string",
            "host \"pve-01\" {\n    mac \"58:47\n}\n",
        ),
        (
            "syntax_unclosed_block",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n",
        ),
        (
            "syntax_kdl_v1_bool",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    wake-on-lan true\n}\n",
        ),
        ("unknown_top_node", "hots \"pve-01\" {\n}\n"),
        (
            "unknown_child",
            "host \"pve-01\" {\n    mca \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "missing_required",
            "host \"pve-01\" {\n    server-type \"ms-01\"\n}\n",
        ),
        ("host_without_block", "host \"pve-01\"\n"),
        (
            "duplicate_child",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    mac \"58:47:ca:71:02:1f\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "invalid_host_name",
            "host \"pve_01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "host_name_not_string",
            "host 42 {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "invalid_mac",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "wrong_value_types",
            "host \"pve-01\" {\n    mac 5847\n    server-type \"ms-01\"\n    rebuild \"1\"\n    wake-on-lan \"yes\"\n}\n",
        ),
        (
            "negative_rebuild",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild -1\n}\n",
        ),
        (
            "two_values",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\" \"58:47:ca:71:02:1f\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "property_and_annotation",
            "host \"pve-01\" {\n    mac value=\"58:47:ca:71:02:1e\"\n    server-type (t)\"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "leaf_with_children",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\" { x 1; }\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "invalid_filesystem",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    disk { filesystem \"ext5\"; }\n}\n",
        ),
        (
            "invalid_raid",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    disk {\n        filesystem \"zfs\"\n        raid \"raidz1\"\n    }\n}\n",
        ),
        (
            "raid_with_ext4",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    disk {\n        filesystem \"ext4\"\n        raid \"raid1\"\n        ashift 12\n    }\n}\n",
        ),
        (
            "raidz_with_btrfs",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    disk { filesystem \"btrfs\"; raid \"raidz-1\"; }\n}\n",
        ),
        (
            "disks_and_filter",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    disk {\n        disks \"nvme0n1\"\n        filter { ID_MODEL \"Samsung*\"; }\n    }\n}\n",
        ),
        (
            "bad_disk_values",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    disk {\n        disks \"nvme0n1\" \"nvme0n1\" \"a b\"\n        ashift 7\n        hdsize 0\n        filter-match \"some\"\n    }\n}\n",
        ),
        (
            "network_incomplete",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    network {\n        cidr \"192.168.1.21/24\"\n    }\n}\n",
        ),
        (
            "network_bad_values",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    network {\n        cidr \"192.168.1.21\"\n        gateway \"192.168.1.x\"\n        dns\n    }\n}\n",
        ),
        (
            "gateway_outside_cidr",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n    network {\n        cidr \"192.168.1.21/24\"\n        gateway \"192.168.2.1\"\n        dns \"9.9.9.9\"\n    }\n}\n",
        ),
        (
            "unknown_server_type",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-1\"\n    rebuild 1\n}\n",
        ),
        (
            "merged_disk_conflict",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"zfs-box\"\n    rebuild 1\n    disk { filesystem \"ext4\"; }\n}\nserver-type \"zfs-box\" {\n    disk { filesystem \"zfs\"; raid \"raid1\"; }\n}\n",
        ),
        (
            "server_type_errors",
            "server-type \"bad key\" {\n    display-name \"x\"\n    management-nic \"enp2s0f0np0-way-too-long\"\n    gpu 1\n    colour \"red\"\n}\n",
        ),
        (
            "duplicate_in_one_file",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n}\nhost \"PVE-01\" {\n    mac \"58-47-CA-71-02-1E\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "utf8_column",
            "host \"pvé-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
    ];
    for (name, input) in cases {
        check(name, input, false);
    }
}

#[test]
fn good_inputs() {
    let cases: &[(&str, &str)] = &[
        (
            "minimal",
            "host \"pve-01\" {\n    mac \"58:47:ca:71:02:1e\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
        ),
        (
            "everything",
            "// a comment\nhost \"pve-02\" {\n    mac \"58-47-CA-71-02-1F\"\n    server-type \"ms-01\"\n    rebuild 0\n    wake-on-lan\n    /- network { cidr \"x\"; }\n    network {\n        cidr \"192.168.1.22/24\"\n        gateway \"192.168.1.1\"\n        dns \"192.168.1.1\" \"9.9.9.9\"\n    }\n    disk {\n        filesystem \"zfs\"\n        filter { ID_MODEL \"Samsung*\"; ID_SERIAL \"S4*\"; }\n        filter-match \"all\"\n        raid \"raid1\"\n        ashift 12\n        hdsize 200.5\n    }\n}\n",
        ),
    ];
    for (name, input) in cases {
        check(name, input, true);
    }
}

/// What a valid file decodes to, as JSON: canonical MAC, lower-case name,
/// defaults filled in.
#[test]
fn decoded_values() {
    let text = r#"
host "PVE-02" {
    mac "58-47-CA-71-02-1F"
    server-type "ms-01"
    rebuild 18446744073709551615
    wake-on-lan #false
    network { cidr "192.168.1.22/24"; gateway "192.168.1.1"; dns "192.168.1.1" "2620:fe::fe"; }
    disk { filesystem "xfs"; disks "sda" "sdb"; swapsize 0; hdsize 100; }
}
server-type "ms-01" {
    display-name "Minisforum MS-01"
    boot-disk "nvme0n1"
    management-nic "enp2s0f0np0"
    gpu
    disk { filesystem "zfs"; }
}
"#;
    let decls = parse_kdl(Path::new("hosts.d/x.kdl"), text);
    assert!(decls.diagnostics.is_empty(), "{:?}", decls.diagnostics);
    let hosts: Vec<_> = decls.hosts.iter().map(|h| &*h.host).collect();
    let types: Vec<_> = decls.server_types.iter().map(|s| &*s.server_type).collect();
    insta::assert_json_snapshot!("decoded_hosts", hosts);
    insta::assert_json_snapshot!("decoded_server_types", types);
    assert_eq!(decls.hosts[0].mac_at.line, 3);
    assert_eq!(decls.hosts[0].mac_at.column, 9);
}

#[test]
fn json_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hosts.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("a.kdl"),
        "host \"pve-01\" {\n    mac \"nope\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("types.kdl"), TYPES).unwrap();
    let mut out = Vec::new();
    let valid = run_check(&dir, None, CheckFormat::Json, &mut out).unwrap();
    assert!(!valid);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["hosts"], 0);
    assert_eq!(v["server_types"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], dir.join("a.kdl").display().to_string());
    assert_eq!(d["line"], 2);
    assert_eq!(d["column"], 9);
    assert_eq!(d["severity"], "error");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid MAC address")
    );
}

/// The commented examples in the repository's `hosts.d/` pass `check`, with
/// and without the example server-types.yaml.
#[test]
fn repository_examples_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hosts.d");
    let yaml = dir.join("server-types.yaml");
    for types in [None, Some(yaml.as_path())] {
        let mut out = Vec::new();
        let valid = run_check(&dir, types, CheckFormat::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(valid, "{text}");
        assert!(!text.contains("warning"), "{text}");
        let n_types = if types.is_some() { 4 } else { 2 };
        assert!(
            text.ends_with(&format!("3 hosts, {n_types} server types, 0 errors\n")),
            "{text}"
        );
    }
}
