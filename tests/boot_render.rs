//! Golden and behavioural tests for the boot-flow renderers: iPXE scripts,
//! answer files (checked against a strict model of the installer's schema),
//! and the first-boot script (shellcheck, and a run against a loopback
//! server).

use provisioning::boot::answer::{
    self, Answer, AnswerDefaults, AnswerError, AnswerParams, FilterMatch, FirstBootSource,
    Keyboard, LvmOptions, NetworkSource, PasswordHash, PlainPassword, RebootMode, ZfsOptions,
};
use provisioning::boot::firstboot::{self, FirstBootParams};
use provisioning::boot::ipxe::{self, Firmware, InstallParams};
use provisioning::decl::{
    DiskSelection, DiskSpec, Filesystem, Host, HostName, RaidLevel, ServerType, SourceLoc,
    StaticNetwork,
};
use provisioning::templates::Templates;
use std::collections::BTreeMap;
use std::path::PathBuf;

const HASH: &str = "$y$j9T$VgMv8lsz/TEvzesCZU3xD.$SK.h4QW51Jr/EmjuaTz5Bt4kYiX2Iezz6omzoqVEwj9";
const PUBKEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx0IRAf3dHdyzM5oJ0h4nO7X9Qc0u1mHkDDBDDWSKqX provisioning-rebuild-3";
const TEST_TOKEN: &str = "test-token-not-a-secret";

fn templates() -> Templates {
    Templates::new(None).unwrap()
}

// ---------------------------------------------------------------- iPXE

fn install_params() -> InstallParams {
    InstallParams {
        base_url: "http://10.0.0.1:8080".to_owned(),
        host: "pve-01".to_owned(),
        iso_sha256: "5f".repeat(32),
        extra_kernel_args: vec!["console=ttyS0,115200n8".to_owned()],
    }
}

#[test]
fn ipxe_install_script() {
    // One script serves BIOS and UEFI iPXE: UEFI needs the initrd=<name>
    // arguments to match the --name of each initrd, BIOS ignores them.
    let out = ipxe::install_script(&templates(), &install_params()).unwrap();
    insta::assert_snapshot!("ipxe_install", out);
    assert!(out.starts_with("#!ipxe\n"));
    let kernel = out.lines().find(|l| l.starts_with("kernel ")).unwrap();
    assert!(kernel.starts_with(
        "kernel http://10.0.0.1:8080/boot/vmlinuz initrd=initrd.img initrd=overlay.cpio.gz "
    ));
    assert!(kernel.ends_with("|| goto failed"));
    for name in ["initrd.img", "overlay.cpio.gz"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!(
                "initrd --name {name} http://10.0.0.1:8080/boot/{name} "
            ))),
            "initrd --name {name} missing"
        );
    }
    assert!(out.trim_end().ends_with("exit 1"));
}

#[test]
fn ipxe_install_script_uefi_serial_console() {
    // The UEFI lab machine: a different console argument, same structure.
    let mut p = install_params();
    p.host = "pve-uefi".to_owned();
    p.extra_kernel_args = vec!["console=tty0".to_owned(), "console=ttyS0".to_owned()];
    let out = ipxe::install_script(&templates(), &p).unwrap();
    insta::assert_snapshot!("ipxe_install_uefi", out);
}

#[test]
fn ipxe_local_boot_scripts() {
    let t = templates();
    insta::assert_snapshot!(
        "ipxe_local_bios",
        ipxe::local_boot_script(&t, Firmware::Bios).unwrap()
    );
    insta::assert_snapshot!(
        "ipxe_local_uefi",
        ipxe::local_boot_script(&t, Firmware::Uefi).unwrap()
    );
    insta::assert_snapshot!(
        "ipxe_local_unknown",
        ipxe::local_boot_script(&t, Firmware::Unknown).unwrap()
    );
    let uefi = ipxe::local_boot_script(&t, Firmware::Uefi).unwrap();
    assert!(!uefi.contains("sanboot"));
    assert!(!uefi.lines().any(|l| l.trim() == "exit"), "plain exit");
}

#[test]
fn ipxe_entry_script() {
    let out = ipxe::entry_script(&templates(), "http://10.0.0.1:8080/").unwrap();
    insta::assert_snapshot!("ipxe_entry", out);
    assert!(out.contains("http://10.0.0.1:8080/ipxe/${mac:hexhyp}?platform=${platform}"));
}

// ---------------------------------------------------------------- answers

fn loc() -> SourceLoc {
    SourceLoc {
        file: PathBuf::from("hosts.d/lab.kdl"),
        line: 1,
        column: 1,
    }
}

fn host(name: &str) -> Host {
    Host {
        name: HostName::parse(name).unwrap(),
        mac: "58:47:ca:71:02:1e".parse().unwrap(),
        server_type: "lab".to_owned(),
        rebuild: 3,
        network: None,
        disk: DiskSpec::default(),
        wake_on_lan: false,
        source: loc(),
    }
}

fn server_type() -> ServerType {
    ServerType {
        key: "lab".to_owned(),
        display_name: "Lab box".to_owned(),
        boot_disk: Some("nvme0n1".to_owned()),
        management_nic: None,
        gpu: false,
        disk: DiskSpec::default(),
        source: loc(),
    }
}

fn defaults() -> AnswerDefaults {
    AnswerDefaults {
        keyboard: Keyboard::DeCh,
        country: "ch".to_owned(),
        timezone: "Europe/Zurich".to_owned(),
        mailto: "ops@example.org".to_owned(),
        domain: "lab.example.org".to_owned(),
        reboot_on_error: false,
        reboot_mode: RebootMode::Reboot,
    }
}

fn build(h: &Host, st: Option<&ServerType>) -> Result<Answer, AnswerError> {
    let d = defaults();
    let hash = PasswordHash::parse(HASH).unwrap();
    let name = &h.name;
    let base = "http://10.0.0.1:8080";
    answer::build_answer(&AnswerParams {
        host: h,
        server_type: st,
        defaults: &d,
        root_password_hash: &hash,
        ssh_public_key: PUBKEY,
        webhook_url: Some(firstboot::installed_webhook_url(base, name, TEST_TOKEN)),
        first_boot_url: Some(firstboot::first_boot_script_url(base, name, TEST_TOKEN)),
        cert_fingerprint: None,
    })
}

fn dhcp_answer() -> Answer {
    build(&host("pve-01"), Some(&server_type())).unwrap()
}

fn static_answer() -> Answer {
    let mut h = host("pve-02");
    h.network = Some(StaticNetwork {
        cidr: "192.168.10.12/24".parse().unwrap(),
        gateway: "192.168.10.1".parse().unwrap(),
        dns: vec![
            "192.168.10.2".parse().unwrap(),
            "192.168.10.3".parse().unwrap(),
        ],
    });
    build(&h, Some(&server_type())).unwrap()
}

fn zfs_answer() -> Answer {
    let mut st = server_type();
    st.disk = DiskSpec {
        filesystem: Some(Filesystem::Zfs),
        disks: Some(DiskSelection::List(vec!["sda".into(), "sdb".into()])),
        raid: Some(RaidLevel::Raid1),
        zfs_ashift: Some(12),
        hdsize: Some(200.0),
        swapsize: None,
    };
    build(&host("pve-03"), Some(&st)).unwrap()
}

fn ext4_answer() -> Answer {
    let mut h = host("pve-04");
    h.disk = DiskSpec {
        filesystem: Some(Filesystem::Ext4),
        disks: Some(DiskSelection::List(vec!["sdc".into()])),
        hdsize: Some(64.0),
        swapsize: Some(8.0),
        ..DiskSpec::default()
    };
    build(&h, Some(&server_type())).unwrap()
}

fn filter_answer() -> Answer {
    let mut h = host("pve-05");
    h.disk = DiskSpec {
        filesystem: Some(Filesystem::Btrfs),
        disks: Some(DiskSelection::Filter {
            props: BTreeMap::from([
                ("ID_MODEL".to_owned(), "Samsung*".to_owned()),
                ("ID_BUS".to_owned(), "nvme".to_owned()),
            ]),
            match_all: true,
        }),
        raid: Some(RaidLevel::Raid1),
        ..DiskSpec::default()
    };
    build(&h, None).unwrap()
}

fn all_answers() -> Vec<(&'static str, Answer)> {
    vec![
        ("answer_dhcp", dhcp_answer()),
        ("answer_static", static_answer()),
        ("answer_zfs_raid1", zfs_answer()),
        ("answer_ext4_single", ext4_answer()),
        ("answer_btrfs_filter", filter_answer()),
    ]
}

#[test]
fn answer_snapshots() {
    for (name, a) in all_answers() {
        insta::assert_snapshot!(name, answer::to_toml(&a).unwrap());
    }
    insta::assert_snapshot!(
        "answer_static_json",
        answer::to_json(&static_answer()).unwrap()
    );
}

#[test]
fn answer_derivations() {
    let a = static_answer();
    assert_eq!(a.global.fqdn, "pve-02.lab.example.org");
    assert_eq!(a.network.source, NetworkSource::FromAnswer);
    assert_eq!(a.network.filter["ID_NET_NAME_MAC"], "*5847ca71021e");
    assert_eq!(a.network.dns, Some("192.168.10.2".parse().unwrap()));
    assert_eq!(a.global.root_ssh_keys, [PUBKEY]);
    let d = dhcp_answer();
    assert_eq!(
        d.disk_setup.disk_list,
        ["nvme0n1"],
        "boot disk is the default"
    );
    assert_eq!(
        d.disk_setup.filesystem,
        Filesystem::Ext4,
        "ext4 is the default"
    );
    let fb = d.first_boot.unwrap();
    assert_eq!(fb.source, FirstBootSource::FromUrl);
    assert_eq!(
        fb.url.unwrap(),
        format!("http://10.0.0.1:8080/api/hosts/pve-01/first-boot-script/{TEST_TOKEN}")
    );
    assert_eq!(
        d.post_installation_webhook.unwrap().url,
        format!("http://10.0.0.1:8080/api/hosts/pve-01/installed/{TEST_TOKEN}")
    );
    // Host fields win over the server type's, field by field.
    let mut st = server_type();
    st.disk.filesystem = Some(Filesystem::Xfs);
    st.disk.hdsize = Some(100.0);
    let mut h = host("pve-06");
    h.disk.hdsize = Some(50.0);
    let a = build(&h, Some(&st)).unwrap();
    assert_eq!(a.disk_setup.filesystem, Filesystem::Xfs);
    assert_eq!(a.disk_setup.lvm.unwrap().hdsize, Some(50.0));
}

#[test]
fn answer_build_refusals() {
    let check = |h: Host, st: Option<ServerType>, expect: &str| {
        let err = build(&h, st.as_ref()).unwrap_err().to_string();
        assert!(err.contains(expect), "{err:?} should contain {expect:?}");
    };
    check(host("a"), None, "has no disk");
    let mut h = host("b");
    h.disk.filesystem = Some(Filesystem::Zfs);
    h.disk.disks = Some(DiskSelection::List(vec!["sda".into(), "sdb".into()]));
    check(h, None, "needs a raid level");
    let mut h = host("c");
    h.network = Some(StaticNetwork {
        cidr: "10.0.0.5/24".parse().unwrap(),
        gateway: "10.0.0.1".parse().unwrap(),
        dns: vec![],
    });
    check(h, Some(server_type()), "without a DNS server");
    let mut h = host("d");
    h.disk.filesystem = Some(Filesystem::Ext4);
    h.disk.disks = Some(DiskSelection::List(vec!["sda".into(), "sdb".into()]));
    check(h, None, "ext4 uses exactly one disk, 2 given");
    let mut h = host("e");
    h.disk.raid = Some(RaidLevel::Raid1);
    check(
        h,
        Some(server_type()),
        "zfs options do not apply to filesystem ext4",
    );
}

#[test]
fn password_hash_rules() {
    for ok in [
        HASH,
        "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
        "$6$rounds=10000$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
        "$5$saltsalt$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF7ERDTH7",
    ] {
        assert!(PasswordHash::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "hunter2hunter2",
        "$1$saltsalt$abcdefghijklmnopqrstuv",
        "$2b$12$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
        "$6$salt$",
        "$6$$abcdefghijklmnopqrstuvwxyz",
        "$6$salt$abc def ghijklmnopqrstuvwxyz",
        "$y$j9T$abcdefghijklmnopqrstuvwxyz",
        "$6$salt$abcdefghijklmnopqrstuvwxyz\n[global]",
    ] {
        assert_eq!(
            PasswordHash::parse(bad),
            Err(AnswerError::PasswordHash),
            "{bad:?}"
        );
    }
    let h = PasswordHash::parse(HASH).unwrap();
    assert!(!format!("{h:?}").contains("$y$"));
    let a = dhcp_answer();
    let dbg = format!("{a:?}");
    assert!(!dbg.contains("VgMv8lsz"), "hash leaked into Debug: {dbg}");
    assert!(!format!("{:?}", PlainPassword("hunter2hunter2".into())).contains("hunter2"));
}

#[test]
fn keyboard_parses_the_installer_names() {
    assert_eq!("de-ch".parse::<Keyboard>().unwrap(), Keyboard::DeCh);
    assert_eq!("pt-br".parse::<Keyboard>().unwrap(), Keyboard::PtBr);
    assert_eq!("en-us".parse::<Keyboard>().unwrap(), Keyboard::EnUs);
    assert!("us".parse::<Keyboard>().is_err());
    assert!("de_ch".parse::<Keyboard>().is_err());
}

/// Each rule of the installer, violated once on an otherwise valid answer.
#[test]
fn validation_table() {
    type Mutation = fn(&mut Answer);
    type Case = (&'static str, fn() -> Answer, Mutation, &'static str);
    let cases: &[Case] = &[
        (
            "no password",
            dhcp_answer,
            |a| a.global.root_password_hashed = None,
            "exactly one of",
        ),
        (
            "both passwords",
            dhcp_answer,
            |a| a.global.root_password = Some(PlainPassword("long-enough".into())),
            "exactly one of",
        ),
        (
            "short plain password",
            dhcp_answer,
            |a| {
                a.global.root_password_hashed = None;
                a.global.root_password = Some(PlainPassword("short".into()));
            },
            "at least 8 characters",
        ),
        (
            "country",
            dhcp_answer,
            |a| a.global.country = "CH".into(),
            "global.country",
        ),
        (
            "country length",
            dhcp_answer,
            |a| a.global.country = "che".into(),
            "global.country",
        ),
        (
            "fqdn single label",
            dhcp_answer,
            |a| a.global.fqdn = "pve".into(),
            "global.fqdn",
        ),
        (
            "fqdn bad label",
            dhcp_answer,
            |a| a.global.fqdn = "pve_1.lan".into(),
            "global.fqdn",
        ),
        (
            "mailto",
            dhcp_answer,
            |a| a.global.mailto = "root".into(),
            "global.mailto",
        ),
        (
            "timezone",
            dhcp_answer,
            |a| a.global.timezone = "Europe/../etc".into(),
            "global.timezone",
        ),
        (
            "ssh key newline",
            dhcp_answer,
            |a| a.global.root_ssh_keys = vec!["ssh-ed25519 AAAA\nx".into()],
            "root-ssh-keys entry 0",
        ),
        (
            "cidr with dhcp",
            dhcp_answer,
            |a| a.network.cidr = Some("10.0.0.2/24".parse().unwrap()),
            "network.cidr is only allowed with source = \"from-answer\"",
        ),
        (
            "filter with dhcp",
            dhcp_answer,
            |a| {
                a.network.filter.insert("ID_NET_NAME".into(), "eno1".into());
            },
            "network.filter is only allowed",
        ),
        (
            "gateway missing",
            static_answer,
            |a| a.network.gateway = None,
            "network.gateway is required",
        ),
        (
            "dns missing",
            static_answer,
            |a| a.network.dns = None,
            "network.dns is required",
        ),
        (
            "filter missing",
            static_answer,
            |a| a.network.filter.clear(),
            "network.filter is required",
        ),
        (
            "filter key",
            static_answer,
            |a| {
                a.network.filter.insert("id net".into(), "x".into());
            },
            "not a udev property name",
        ),
        (
            "no disks",
            dhcp_answer,
            |a| a.disk_setup.disk_list.clear(),
            "either disk-list or filter",
        ),
        (
            "disk-list and filter",
            dhcp_answer,
            |a| {
                a.disk_setup.filter.insert("ID_BUS".into(), "nvme".into());
            },
            "both disk-list and filter",
        ),
        (
            "filter-match without filter",
            dhcp_answer,
            |a| a.disk_setup.filter_match = Some(FilterMatch::All),
            "filter-match is only allowed",
        ),
        (
            "duplicate disk",
            zfs_answer,
            |a| a.disk_setup.disk_list = vec!["sda".into(), "sda".into()],
            "twice",
        ),
        (
            "disk name",
            dhcp_answer,
            |a| a.disk_setup.disk_list = vec!["../sda".into()],
            "not a device name",
        ),
        (
            "raid on ext4",
            dhcp_answer,
            |a| {
                a.disk_setup.zfs = Some(ZfsOptions {
                    raid: Some(RaidLevel::Raid1),
                    ..Default::default()
                })
            },
            "zfs options do not apply to filesystem ext4",
        ),
        (
            "lvm on zfs",
            zfs_answer,
            |a| {
                a.disk_setup.lvm = Some(LvmOptions {
                    swapsize: Some(4.0),
                    hdsize: None,
                })
            },
            "lvm options do not apply to filesystem zfs",
        ),
        (
            "zfs without raid",
            zfs_answer,
            |a| a.disk_setup.zfs.as_mut().unwrap().raid = None,
            "zfs.raid must be set",
        ),
        (
            "zfs too few disks",
            zfs_answer,
            |a| a.disk_setup.disk_list.truncate(1),
            "raid1 needs at least 2 disks, 1 given",
        ),
        (
            "raidz-2 too few disks",
            zfs_answer,
            |a| a.disk_setup.zfs.as_mut().unwrap().raid = Some(RaidLevel::RaidZ2),
            "raidz-2 needs at least 4 disks",
        ),
        (
            "ashift",
            zfs_answer,
            |a| a.disk_setup.zfs.as_mut().unwrap().ashift = Some(17),
            "ashift must be between 9 and 16",
        ),
        (
            "hdsize",
            zfs_answer,
            |a| a.disk_setup.zfs.as_mut().unwrap().hdsize = Some(1.0),
            "hdsize must be at least 2",
        ),
        (
            "swapsize",
            ext4_answer,
            |a| a.disk_setup.lvm.as_mut().unwrap().swapsize = Some(40.0),
            "swapsize must be between 0 and hdsize / 2",
        ),
        (
            "btrfs raidz",
            filter_answer,
            |a| a.disk_setup.btrfs.as_mut().unwrap().raid = Some(RaidLevel::RaidZ1),
            "btrfs supports raid0, raid1 and raid10 only",
        ),
        (
            "two disks on ext4",
            ext4_answer,
            |a| a.disk_setup.disk_list.push("sdd".into()),
            "exactly one disk",
        ),
        (
            "webhook url",
            dhcp_answer,
            |a| a.post_installation_webhook.as_mut().unwrap().url = "ftp://x".into(),
            "post-installation-webhook.url",
        ),
        (
            "fingerprint",
            dhcp_answer,
            |a| {
                a.post_installation_webhook
                    .as_mut()
                    .unwrap()
                    .cert_fingerprint = Some("AB:CD".into())
            },
            "cert-fingerprint",
        ),
        (
            "first-boot url missing",
            dhcp_answer,
            |a| a.first_boot.as_mut().unwrap().url = None,
            "first-boot.url is required",
        ),
        (
            "first-boot url with iso",
            dhcp_answer,
            |a| a.first_boot.as_mut().unwrap().source = FirstBootSource::FromIso,
            "first-boot.url is only allowed",
        ),
    ];
    for (what, base, mutate, expect) in cases {
        let mut a = base();
        answer::validate(&a).unwrap_or_else(|e| panic!("{what}: base answer invalid: {e}"));
        mutate(&mut a);
        let err = answer::validate(&a)
            .err()
            .unwrap_or_else(|| panic!("{what}: expected an error containing {expect:?}"));
        let msg = err.to_string();
        assert!(
            msg.contains(expect),
            "{what}: {msg:?} should contain {expect:?}"
        );
        assert!(!msg.contains("VgMv8lsz"), "{what}: hash leaked: {msg}");
        assert!(
            answer::to_toml(&a).is_err(),
            "{what}: to_toml must validate"
        );
    }
}

/// The installer's answer schema (proxmox-installer-types, installer 9.2),
/// with `deny_unknown_fields` everywhere it has it: our output must parse.
#[allow(dead_code)] // The fields mirror the schema; parsing is the check.
mod installer_schema {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct AutoInstallerConfig {
        pub global: GlobalOptions,
        pub network: NetworkConfig,
        #[serde(rename = "disk-setup")]
        pub disks: DiskSetup,
        pub post_installation_webhook: Option<PostNotificationHookInfo>,
        pub first_boot: Option<FirstBootHookInfo>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct GlobalOptions {
        pub country: String,
        pub fqdn: String,
        pub keyboard: KeyboardLayout,
        pub mailto: String,
        pub timezone: String,
        pub root_password: Option<String>,
        pub root_password_hashed: Option<String>,
        #[serde(default)]
        pub reboot_on_error: bool,
        #[serde(default)]
        pub reboot_mode: Option<RebootMode>,
        #[serde(default)]
        pub root_ssh_keys: Vec<String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub enum RebootMode {
        Reboot,
        PowerOff,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub enum KeyboardLayout {
        De,
        DeCh,
        Dk,
        EnGb,
        EnUs,
        Es,
        Fi,
        Fr,
        FrBe,
        FrCa,
        FrCh,
        Hu,
        Is,
        It,
        Jp,
        Lt,
        Mk,
        Nl,
        No,
        Pl,
        Pt,
        PtBr,
        Se,
        Si,
        Tr,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct PostNotificationHookInfo {
        pub url: String,
        pub cert_fingerprint: Option<String>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub enum FirstBootHookSourceMode {
        FromUrl,
        FromIso,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub enum FirstBootHookServiceOrdering {
        BeforeNetwork,
        NetworkOnline,
        FullyUp,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct FirstBootHookInfo {
        pub source: FirstBootHookSourceMode,
        pub ordering: Option<FirstBootHookServiceOrdering>,
        pub url: Option<String>,
        pub cert_fingerprint: Option<String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct NetworkConfigFromAnswer {
        pub cidr: ipnet::IpNet,
        pub dns: std::net::IpAddr,
        pub gateway: std::net::IpAddr,
        #[serde(default)]
        pub filter: BTreeMap<String, String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct NetworkConfigFromDhcp {}

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, tag = "source")]
    pub enum NetworkConfig {
        FromDhcp(NetworkConfigFromDhcp),
        FromAnswer(NetworkConfigFromAnswer),
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct DiskSetup {
        pub filesystem: FilesystemKind,
        #[serde(default)]
        pub disk_list: Vec<String>,
        #[serde(default)]
        pub filter: BTreeMap<String, String>,
        pub filter_match: Option<FilterMatch>,
        pub zfs: Option<ZfsOptions>,
        pub lvm: Option<LvmOptions>,
        pub btrfs: Option<BtrfsOptions>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "lowercase", deny_unknown_fields)]
    pub enum FilesystemKind {
        Ext4,
        Xfs,
        Zfs,
        Btrfs,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "lowercase", deny_unknown_fields)]
    pub enum FilterMatch {
        Any,
        All,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "UPPERCASE")]
    pub enum ZfsRaidLevel {
        #[serde(alias = "raid0")]
        Raid0,
        #[serde(alias = "raid1")]
        Raid1,
        #[serde(alias = "raid10")]
        Raid10,
        #[serde(alias = "raidz-1", rename = "RAIDZ-1")]
        RaidZ,
        #[serde(alias = "raidz-2", rename = "RAIDZ-2")]
        RaidZ2,
        #[serde(alias = "raidz-3", rename = "RAIDZ-3")]
        RaidZ3,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "UPPERCASE")]
    pub enum BtrfsRaidLevel {
        #[serde(alias = "raid0")]
        Raid0,
        #[serde(alias = "raid1")]
        Raid1,
        #[serde(alias = "raid10")]
        Raid10,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct ZfsOptions {
        pub raid: Option<ZfsRaidLevel>,
        pub ashift: Option<u32>,
        pub arc_max: Option<u32>,
        pub copies: Option<u32>,
        pub hdsize: Option<f64>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct LvmOptions {
        pub hdsize: Option<f64>,
        pub swapsize: Option<f64>,
        pub maxroot: Option<f64>,
        pub maxvz: Option<f64>,
        pub minfree: Option<f64>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct BtrfsOptions {
        pub hdsize: Option<f64>,
        pub raid: Option<BtrfsRaidLevel>,
    }
}

#[test]
fn rendered_answers_parse_with_the_installer_schema() {
    for (name, a) in all_answers() {
        let text = answer::to_toml(&a).unwrap();
        let parsed: installer_schema::AutoInstallerConfig = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: installer rejects it: {e}\n{text}"));
        assert_eq!(
            parsed.global.root_password_hashed.as_deref(),
            Some(HASH),
            "{name}"
        );
        assert!(parsed.global.root_password.is_none(), "{name}");
        assert_eq!(parsed.global.root_ssh_keys, [PUBKEY], "{name}");
        let fb = parsed.first_boot.unwrap();
        assert_eq!(
            fb.source,
            installer_schema::FirstBootHookSourceMode::FromUrl
        );
        assert_eq!(
            fb.ordering,
            Some(installer_schema::FirstBootHookServiceOrdering::NetworkOnline)
        );
        // The installer's own disk-list xor filter check.
        let d = &parsed.disks;
        assert!(d.disk_list.is_empty() != d.filter.is_empty(), "{name}");
        // Tokens only ever in paths.
        let hook = parsed.post_installation_webhook.unwrap();
        assert!(!hook.url.contains('?') && !fb.url.as_deref().unwrap().contains('?'));
        // The JSON form parses with the same model.
        let json = answer::to_json(&a).unwrap();
        let _: installer_schema::AutoInstallerConfig =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name} json: {e}"));
    }
    // And the model does reject what the installer rejects.
    let bad = answer::to_toml(&dhcp_answer())
        .unwrap()
        .replace("[global]", "[global]\nroot_passwd = \"x\"");
    assert!(toml::from_str::<installer_schema::AutoInstallerConfig>(&bad).is_err());
}

// ---------------------------------------------------------------- first boot

fn first_boot_params(public_url: &str) -> FirstBootParams {
    FirstBootParams {
        public_url: public_url.to_owned(),
        host: HostName::parse("pve-01").unwrap(),
        token: TEST_TOKEN.to_owned(),
        deadline_secs: firstboot::DEFAULT_DEADLINE_SECS,
    }
}

#[test]
fn first_boot_script_snapshot() {
    let out = firstboot::render(&templates(), &first_boot_params("http://10.0.0.1:8080/")).unwrap();
    insta::assert_snapshot!("first_boot", out);
    assert!(out.starts_with("#!/bin/sh\n"));
    assert!(
        !out.contains(&format!("phone-home/{TEST_TOKEN}")),
        "token must not be in the URL"
    );
}

#[test]
fn first_boot_refuses_bad_params() {
    let t = templates();
    let mut p = first_boot_params("http://10.0.0.1:8080");
    p.token = "x'; rm -rf / #".to_owned();
    assert!(firstboot::render(&t, &p).is_err());
    let p = first_boot_params("file:///etc/passwd");
    assert!(firstboot::render(&t, &p).is_err());
    // Quoting holds even for a hostile URL path.
    let p = first_boot_params("http://h/$(reboot)'`x`");
    let out = firstboot::render(&t, &p).unwrap();
    assert!(
        out.contains("PHONE_HOME_URL='http://h/$(reboot)'\\''`x`/api/hosts/pve-01/phone-home'")
    );
}

fn write_script(dir: &std::path::Path, text: &str) -> PathBuf {
    let path = dir.join("first-boot.sh");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn first_boot_script_passes_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    let text = firstboot::render(&templates(), &first_boot_params("http://10.0.0.1:8080")).unwrap();
    let path = write_script(dir.path(), &text);
    let out = std::process::Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("shellcheck is required for this test (Debian package shellcheck): {e}")
        });
    assert!(
        out.status.success(),
        "shellcheck -s sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback HTTP server answering each request with the next status from
/// `statuses`; returns the raw requests it saw.
fn serve(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for status in statuses {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by Content-Length.
            loop {
                let n = conn.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.push(String::from_utf8_lossy(&buf).to_string());
            let reply =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            conn.write_all(reply.as_bytes()).unwrap();
        }
        seen
    });
    (url, handle)
}

fn run_script(public_url: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut p = first_boot_params(public_url);
    p.deadline_secs = 10;
    let text = firstboot::render(&templates(), &p).unwrap();
    let path = write_script(dir.path(), &text);
    std::process::Command::new("sh")
        .arg(&path)
        .output()
        .expect("sh must run")
}

/// Runs the script with nothing but busybox: its sh, its applets, its wget
/// (no curl, no getent), the most constrained system it may meet.
fn run_script_busybox(public_url: &str) -> std::process::Output {
    let busybox = std::path::Path::new("/usr/bin/busybox");
    assert!(
        busybox.exists(),
        "/usr/bin/busybox is required for this test (Debian package busybox-static)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for applet in [
        "sh", "ip", "awk", "sed", "head", "hostname", "tr", "mktemp", "rm", "sleep", "timeout",
        "wget", "cat",
    ] {
        std::os::unix::fs::symlink(busybox, bin.join(applet)).unwrap();
    }
    let mut p = first_boot_params(public_url);
    p.deadline_secs = 10;
    let text = firstboot::render(&templates(), &p).unwrap();
    let path = write_script(dir.path(), &text);
    std::process::Command::new(busybox)
        .arg("sh")
        .arg(&path)
        .env_clear()
        .env("PATH", &bin)
        .output()
        .expect("busybox sh must run")
}

#[test]
fn first_boot_script_works_with_busybox_wget() {
    let (url, server) = serve(vec![503, 200]);
    let out = run_script_busybox(&url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {stderr}");
    let requests = server.join().unwrap();
    assert_eq!(requests.len(), 2, "one retry after the 503");
    let req = &requests[1];
    assert!(
        req.starts_with("POST /api/hosts/pve-01/phone-home HTTP/1."),
        "{req}"
    );
    assert!(
        req.contains(&format!("Authorization: Bearer {TEST_TOKEN}\r\n")),
        "{req}"
    );
    assert!(req.contains("Content-Type: application/json\r\n"), "{req}");
    let body = &req[req.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["ip"], "127.0.0.1", "{body}");
    assert!(!stderr.contains(TEST_TOKEN), "token logged: {stderr}");
}

#[test]
fn first_boot_script_phones_home_with_bearer_token() {
    let (url, server) = serve(vec![200]);
    let out = run_script(&url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {stderr}");
    let requests = server.join().unwrap();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert!(
        req.starts_with("POST /api/hosts/pve-01/phone-home HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(
        req.contains(&format!("Authorization: Bearer {TEST_TOKEN}\r\n")),
        "{req}"
    );
    assert!(req.contains("Content-Type: application/json\r\n"), "{req}");
    let body = &req[req.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json["ip"], "127.0.0.1",
        "route to the loopback server: {body}"
    );
    assert!(
        json["hardware_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(!stderr.contains(TEST_TOKEN), "token logged: {stderr}");
}

#[test]
fn first_boot_script_retries_then_succeeds() {
    let (url, server) = serve(vec![503, 200]);
    let out = run_script(&url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.join().unwrap().len(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("retrying in 5s"));
}

#[test]
fn first_boot_script_gives_up_on_refusal() {
    let (url, server) = serve(vec![401]);
    let out = run_script(&url);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.join().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused (HTTP 401)"));
}
