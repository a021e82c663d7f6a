//! The loader across files and across time: uniqueness, last valid versions,
//! deletions, ignored files, server types from YAML and KDL, and that a
//! reload re-parses only what changed.

use provisioning::decl::{DeclLoader, HostName, Severity, Snapshot};
use std::path::{Path, PathBuf};

struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    hosts: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let hosts = root.join("hosts.d");
        std::fs::create_dir(&hosts).unwrap();
        Dir {
            _tmp: tmp,
            root,
            hosts,
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.hosts.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn remove(&self, name: &str) -> PathBuf {
        let p = self.hosts.join(name);
        std::fs::remove_file(&p).unwrap();
        p
    }

    /// Diagnostics as `file:line:col: severity: message`, temp path stripped.
    fn diags(&self, snap: &Snapshot) -> Vec<String> {
        let prefix = format!("{}/", self.root.display());
        snap.diagnostics
            .iter()
            .map(|d| d.to_string().replace(&prefix, ""))
            .collect()
    }
}

fn host(name: &str, mac: &str, rebuild: u64) -> String {
    format!(
        "host \"{name}\" {{\n    mac \"{mac}\"\n    server-type \"ms-01\"\n    rebuild {rebuild}\n}}\n"
    )
}

const TYPES: &str = "server-type \"ms-01\" {\n    boot-disk \"nvme0n1\"\n}\n";

fn names(snap: &Snapshot) -> Vec<&str> {
    snap.hosts.keys().map(HostName::as_str).collect()
}

fn rebuild_of(snap: &Snapshot, name: &str) -> u64 {
    snap.hosts[&HostName::parse(name).unwrap()].rebuild
}

#[test]
fn duplicate_name_across_files_names_both() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    d.write(
        "b.kdl",
        &format!("\n\n{}", host("pve-01", "58:47:ca:71:02:02", 2)),
    );
    let snap = DeclLoader::new().load_all(&d.hosts, None);
    assert_eq!(names(&snap), ["pve-01"]);
    assert_eq!(
        rebuild_of(&snap, "pve-01"),
        1,
        "the lexically first file wins"
    );
    assert_eq!(
        d.diags(&snap),
        [
            "hosts.d/b.kdl:3:1: error: duplicate host name \"pve-01\": also declared at hosts.d/a.kdl:1:1"
        ]
    );
}

#[test]
fn duplicate_mac_across_files_names_both() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    d.write("b.kdl", &host("pve-02", "58-47-CA-71-02-01", 1));
    let snap = DeclLoader::new().load_all(&d.hosts, None);
    assert_eq!(names(&snap), ["pve-01"]);
    assert_eq!(
        d.diags(&snap),
        [
            "hosts.d/b.kdl:2:9: error: duplicate MAC 58:47:ca:71:02:01: also used by host \"pve-01\" at hosts.d/a.kdl:2:9"
        ]
    );
}

#[test]
fn broken_file_keeps_last_valid_version() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write(
        "a.kdl",
        &(host("pve-01", "58:47:ca:71:02:01", 1) + &host("pve-02", "58:47:ca:71:02:02", 1)),
    );
    let mut loader = DeclLoader::new();
    let snap = loader.load_all(&d.hosts, None);
    assert_eq!(names(&snap), ["pve-01", "pve-02"]);
    assert!(snap.diagnostics.is_empty());

    // Raise pve-01's rebuild but break pve-02: nothing of the new version
    // comes into force, both hosts stay as they were.
    let p = d.write(
        "a.kdl",
        &(host("pve-01", "58:47:ca:71:02:01", 2) + "host \"pve-02\" {\n    mac \"oops\"\n}\n"),
    );
    let snap = loader.reload(std::slice::from_ref(&p));
    assert_eq!(names(&snap), ["pve-01", "pve-02"]);
    assert_eq!(rebuild_of(&snap, "pve-01"), 1);
    assert!(snap.has_errors());
    insta::assert_debug_snapshot!("broken_keeps_last_valid", d.diags(&snap));

    // Fixed: the new version comes into force, errors are gone.
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 2));
    let snap = loader.reload(&[p]);
    assert_eq!(names(&snap), ["pve-01"]);
    assert_eq!(rebuild_of(&snap, "pve-01"), 2);
    assert!(snap.diagnostics.is_empty(), "{:?}", snap.diagnostics);
}

#[test]
fn new_file_with_conflict_does_not_displace_the_host_in_force() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("m.kdl", &host("pve-01", "58:47:ca:71:02:01", 3));
    let mut loader = DeclLoader::new();
    loader.load_all(&d.hosts, None);
    // "a.kdl" sorts first, but pve-01 in m.kdl is already in force.
    let p = d.write(
        "a.kdl",
        &(host("pve-01", "58:47:ca:71:02:09", 7) + &host("pve-03", "58:47:ca:71:02:03", 1)),
    );
    let snap = loader.reload(std::slice::from_ref(&p));
    assert_eq!(
        names(&snap),
        ["pve-01"],
        "a.kdl has an error: none of it is in force"
    );
    assert_eq!(rebuild_of(&snap, "pve-01"), 3);
    assert_eq!(
        d.diags(&snap),
        [
            "hosts.d/a.kdl:1:1: error: duplicate host name \"pve-01\": also declared at hosts.d/m.kdl:1:1"
        ]
    );
    // Moving the host from m.kdl to a.kdl in one change is fine.
    let q = d.write("m.kdl", "// moved to a.kdl\n");
    let snap = loader.reload(&[q, p]);
    assert_eq!(names(&snap), ["pve-01", "pve-03"]);
    assert_eq!(rebuild_of(&snap, "pve-01"), 7);
    assert!(snap.diagnostics.is_empty(), "{:?}", snap.diagnostics);
}

#[test]
fn deleted_file_retires_its_hosts_even_when_broken() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    d.write("b.kdl", &host("pve-02", "58:47:ca:71:02:02", 1));
    let mut loader = DeclLoader::new();
    loader.load_all(&d.hosts, None);
    let p = d.write("b.kdl", "host {");
    let snap = loader.reload(&[p]);
    assert_eq!(names(&snap), ["pve-01", "pve-02"]);
    let p = d.remove("b.kdl");
    let snap = loader.reload(&[p]);
    assert_eq!(names(&snap), ["pve-01"]);
    assert!(snap.diagnostics.is_empty());
    assert!(
        snap.host_by_mac(&"58:47:ca:71:02:02".parse().unwrap())
            .is_none()
    );
}

#[test]
fn ignores_dotfiles_swap_and_backup_files() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    let junk = [
        ".a.kdl.swp",
        ".a.kdl",
        ".#a.kdl",
        "a.kdl~",
        "a.kdl.bak",
        "#a.kdl#",
        ".kdl",
        "README",
    ];
    for name in junk {
        d.write(name, "this is not { valid");
    }
    std::fs::create_dir(d.hosts.join("dir.kdl")).unwrap();
    let mut loader = DeclLoader::new();
    let snap = loader.load_all(&d.hosts, None);
    assert_eq!(names(&snap), ["pve-01"]);
    assert!(snap.diagnostics.is_empty(), "{:?}", snap.diagnostics);
    let parses = loader.stats().parses;
    let changed: Vec<PathBuf> = junk.iter().map(|n| d.hosts.join(n)).collect();
    let snap = loader.reload(&changed);
    assert!(snap.diagnostics.is_empty());
    assert_eq!(
        loader.stats().parses,
        parses,
        "ignored files are never parsed"
    );
}

#[test]
fn server_types_from_yaml_and_kdl() {
    let d = Dir::new();
    let yaml = d.root.join("server-types.yaml");
    std::fs::write(
        &yaml,
        "server_types:\n  ms-01:\n    display_name: Minisforum MS-01\n    boot_disk: nvme0n1\n    management_nic: enp2s0f0np0\n    gpu: false\n  gpu-box:\n    display_name: GPU box\n    boot_disk: sda\n    management_nic: eno1\n    gpu: true\n    filesystem: zfs\n    raid: raid1\n    disks: [sda, sdb]\n",
    )
    .unwrap();
    d.write(
        "types.kdl",
        "server-type \"kdl-type\" {\n    display-name \"From KDL\"\n}\n",
    );
    d.write(
        "a.kdl",
        &(host("pve-01", "58:47:ca:71:02:01", 1)
            + "host \"pve-02\" {\n    mac \"58:47:ca:71:02:02\"\n    server-type \"gpu-box\"\n    rebuild 1\n}\nhost \"pve-03\" {\n    mac \"58:47:ca:71:02:03\"\n    server-type \"kdl-type\"\n    rebuild 1\n}\n"),
    );
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    assert!(snap.diagnostics.is_empty(), "{:?}", snap.diagnostics);
    assert_eq!(
        snap.server_types
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["gpu-box", "kdl-type", "ms-01"]
    );
    let gpu = &snap.server_types["gpu-box"];
    assert!(gpu.gpu);
    assert_eq!(gpu.source.line, 7);
    let h = &snap.hosts[&HostName::parse("pve-02").unwrap()];
    let disk = provisioning::decl::resolve_disk(h, gpu);
    insta::assert_debug_snapshot!("resolved_disk_gpu_box", disk);
    let ms = &snap.server_types["ms-01"];
    let h1 = &snap.hosts[&HostName::parse("pve-01").unwrap()];
    let disk = provisioning::decl::resolve_disk(h1, ms);
    assert_eq!(
        disk.disks,
        Some(provisioning::decl::DiskSelection::List(vec![
            "nvme0n1".into()
        ])),
        "boot_disk is the default disk list"
    );
}

#[test]
fn yaml_errors_have_line_and_column() {
    let d = Dir::new();
    let yaml = d.root.join("server-types.yaml");
    std::fs::write(
        &yaml,
        "server_types:\n  ms-01:\n    display_name: Minisforum MS-01\n    boot_disks: nvme0n1\n",
    )
    .unwrap();
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    insta::assert_debug_snapshot!("yaml_unknown_key", d.diags(&snap));
    std::fs::write(
        &yaml,
        "server_types:\n  ms-01:\n    filesystem: ext5\n    raid: raid1\n    gpu: maybe\n",
    )
    .unwrap();
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    insta::assert_debug_snapshot!("yaml_bad_bool", d.diags(&snap));
    std::fs::write(
        &yaml,
        "server_types:\n  ms-01:\n    filesystem: ext5\n    raid: raidz-9\n  \"bad key\":\n    disks: [sda]\n    filter: {ID_MODEL: x}\n",
    )
    .unwrap();
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    insta::assert_debug_snapshot!("yaml_bad_values", d.diags(&snap));
}

#[test]
fn server_type_defined_twice_names_both_places() {
    let d = Dir::new();
    let yaml = d.root.join("server-types.yaml");
    std::fs::write(&yaml, "server_types:\n  ms-01:\n    display_name: A\n").unwrap();
    d.write("types.kdl", TYPES);
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    assert_eq!(snap.server_types.len(), 1);
    insta::assert_debug_snapshot!("server_type_twice", d.diags(&snap));
}

#[test]
fn unknown_server_type_is_an_error_on_the_host() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write(
        "a.kdl",
        &host("pve-01", "58:47:ca:71:02:01", 1).replace("ms-01", "ms-02"),
    );
    let snap = DeclLoader::new().load_all(&d.hosts, None);
    assert!(snap.hosts.is_empty());
    assert_eq!(
        d.diags(&snap),
        ["hosts.d/a.kdl:3:17: error: unknown server type \"ms-02\" (did you mean \"ms-01\"?)"]
    );
}

#[test]
fn removing_a_server_type_never_drops_hosts() {
    let d = Dir::new();
    let t = d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    let mut loader = DeclLoader::new();
    loader.load_all(&d.hosts, None);
    let t = {
        std::fs::remove_file(&t).unwrap();
        t
    };
    let snap = loader.reload(&[t]);
    assert_eq!(names(&snap), ["pve-01"], "the host stays, with an error");
    assert_eq!(
        d.diags(&snap),
        ["hosts.d/a.kdl:3:17: error: unknown server type \"ms-01\" (no server types are defined)"]
    );
}

#[test]
fn unreadable_inputs_are_diagnostics() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    std::fs::write(
        d.hosts.join("bin.kdl"),
        b"host \"x\" {\n  mac \"\xff\xfe\"\n}\n",
    )
    .unwrap();
    let snap = DeclLoader::new().load_all(&d.hosts, None);
    assert_eq!(
        d.diags(&snap),
        ["hosts.d/bin.kdl:2:8: error: file is not valid UTF-8"]
    );
    let missing = d.root.join("nope.d");
    let snap = DeclLoader::new().load_all(&missing, None);
    assert!(snap.has_errors());
    assert_eq!(snap.diagnostics[0].line, 0);
    assert!(
        snap.diagnostics[0]
            .message
            .starts_with("cannot list the hosts directory")
    );
}

#[test]
fn vanished_directory_does_not_retire_hosts() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    let mut loader = DeclLoader::new();
    loader.load_all(&d.hosts, None);
    let moved = d.root.join("moved.d");
    std::fs::rename(&d.hosts, &moved).unwrap();
    let snap = loader.reload(std::slice::from_ref(&d.hosts));
    assert_eq!(names(&snap), ["pve-01"]);
    assert!(snap.has_errors());
    std::fs::rename(&moved, &d.hosts).unwrap();
    let snap = loader.reload(std::slice::from_ref(&d.hosts));
    assert_eq!(names(&snap), ["pve-01"]);
    assert!(snap.diagnostics.is_empty());
}

#[test]
fn same_input_same_snapshot() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    for i in 0..20 {
        // Every third file collides with the previous one on the MAC.
        let mac = format!("58:47:ca:71:02:{:02x}", i - i % 3);
        d.write(&format!("h{i:02}.kdl"), &host(&format!("pve-{i}"), &mac, 1));
    }
    let a = DeclLoader::new().load_all(&d.hosts, None);
    let b = DeclLoader::new().load_all(&d.hosts, None);
    assert_eq!(a.hosts, b.hosts);
    assert_eq!(a.diagnostics, b.diagnostics);
    assert_eq!(names(&a).len(), 7);
    assert_eq!(a.diagnostics.len(), 13);
}

/// 10,000 hosts in 1,000 files: a one-file change parses that one file.
#[test]
fn reload_of_one_file_parses_only_that_file() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    for f in 0..1000u32 {
        let mut text = String::new();
        for h in 0..10u32 {
            let n = f * 10 + h;
            let mac = format!(
                "02:00:00:{:02x}:{:02x}:{:02x}",
                n >> 16,
                (n >> 8) & 0xff,
                n & 0xff
            );
            text.push_str(&host(&format!("node-{n}"), &mac, 1));
        }
        d.write(&format!("rack-{f:04}.kdl"), &text);
    }
    let mut loader = DeclLoader::new();
    let t = std::time::Instant::now();
    let snap = loader.load_all(&d.hosts, None);
    eprintln!("load_all of 10,000 hosts in 1,000 files: {:?}", t.elapsed());
    assert_eq!(snap.hosts.len(), 10_000);
    assert!(snap.diagnostics.is_empty());
    assert_eq!(loader.stats().parses, 1001);

    let before = loader.stats();
    let p = d.write("rack-0500.kdl", &host("node-5000", "02:00:00:00:13:88", 2));
    let t = std::time::Instant::now();
    let snap = loader.reload(&[p]);
    eprintln!("reload of one file among 10,000 hosts: {:?}", t.elapsed());
    assert_eq!(loader.stats().parses - before.parses, 1);
    assert_eq!(loader.stats().reads - before.reads, 1);
    assert_eq!(snap.hosts.len(), 9_991);
    assert_eq!(rebuild_of(&snap, "node-5000"), 2);

    let t = std::time::Instant::now();
    loader.reload(&[]);
    eprintln!(
        "cross-file validation alone over 10,000 hosts: {:?}",
        t.elapsed()
    );

    // A rescan reads everything but parses nothing that did not change.
    let before = loader.stats();
    let snap = loader.rescan();
    assert_eq!(loader.stats().parses, before.parses);
    assert_eq!(snap.hosts.len(), 9_991);
}

#[test]
fn paths_outside_the_directory_are_ignored() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    let mut loader = DeclLoader::new();
    loader.load_all(&d.hosts, None);
    let parses = loader.stats().parses;
    let outside = d.root.join("x.kdl");
    std::fs::write(&outside, "garbage {").unwrap();
    let snap = loader.reload(&[outside, Path::new("/etc/passwd").to_path_buf()]);
    assert!(snap.diagnostics.is_empty());
    assert_eq!(loader.stats().parses, parses);
    let _ = Severity::Error;
}

/// In a chain of conflicts (c.kdl loses to b.kdl, b.kdl loses to a.kdl) only
/// b.kdl is rejected: c.kdl comes into force once b.kdl is out of the way.
#[test]
fn conflict_chains_reject_only_the_real_loser() {
    let d = Dir::new();
    d.write("types.kdl", TYPES);
    d.write("a.kdl", &host("pve-01", "58:47:ca:71:02:01", 1));
    d.write(
        "b.kdl",
        &(host("pve-01", "58:47:ca:71:02:02", 1) + &host("pve-02", "58:47:ca:71:02:03", 1)),
    );
    d.write("c.kdl", &host("pve-02", "58:47:ca:71:02:04", 1));
    let snap = DeclLoader::new().load_all(&d.hosts, None);
    assert_eq!(names(&snap), ["pve-01", "pve-02"]);
    assert_eq!(
        snap.hosts[&HostName::parse("pve-02").unwrap()].source.file,
        d.hosts.join("c.kdl")
    );
    assert_eq!(
        d.diags(&snap),
        [
            "hosts.d/b.kdl:1:1: error: duplicate host name \"pve-01\": also declared at hosts.d/a.kdl:1:1"
        ]
    );
}

#[test]
fn server_type_repeated_in_yaml_names_both_places() {
    let d = Dir::new();
    let yaml = d.root.join("server-types.yaml");
    std::fs::write(
        &yaml,
        "server_types:\n  ms-01:\n    display_name: A\n  ms-01:\n    display_name: B\n",
    )
    .unwrap();
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    assert!(snap.server_types.is_empty(), "the file is not in force");
    insta::assert_debug_snapshot!("yaml_repeated_keys", d.diags(&snap));
    std::fs::write(
        &yaml,
        "server_types:\n  ms-01:\n    gpu: true\n    gpu: false\n",
    )
    .unwrap();
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    insta::assert_debug_snapshot!("yaml_repeated_field", d.diags(&snap));
}

#[test]
fn missing_server_types_file_is_an_error() {
    let d = Dir::new();
    let yaml = d.root.join("server-types.yaml");
    let snap = DeclLoader::new().load_all(&d.hosts, Some(&yaml));
    assert_eq!(
        d.diags(&snap),
        ["server-types.yaml: error: cannot read: no such file or directory (os error 2)"]
    );
}
