//! The Proxmox auto-installer answer file: a typed value mirroring the
//! installer's TOML format (installer 8.4+, kebab-case keys), built from a
//! host declaration and settings, checked with the installer's own rules,
//! and serialized with the `toml` crate. Never string templating.
//!
//! [`build_answer`] makes the answer for one host and rebuild;
//! [`validate`] applies the installer's rules (so a bad answer fails here,
//! with a clear message, instead of on a wiped machine); [`to_toml`] and
//! [`to_json`] serialize it. This module never decides *whether* a machine
//! gets an answer (the handler does), and the root password hash inside an
//! [`Answer`] is redacted from every `Debug` output and error.
//!
//! The webhook and first-boot URLs come from the caller; by contract they
//! carry the rebuild's token in the path (see [`crate::boot::firstboot`]),
//! so a rendered answer is as secret as the token: never log it.
//!
//! Keys are kebab-case, which needs installer 8.4 or newer (before 8.4
//! `[global]` keys had to be snake_case). The installer takes one DNS server
//! for a static network: the first one the host declares is used.

use crate::decl::{DiskSelection, DiskSpec, Filesystem, Host, RaidLevel, ServerType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    #[error(
        "root password hash must be a $6$ (sha512-crypt), $5$ (sha256-crypt) or $y$ (yescrypt) crypt string"
    )]
    PasswordHash,
    #[error("exactly one of global.root-password and global.root-password-hashed must be set")]
    PasswordForms,
    #[error("global.root-password must be at least 8 characters long")]
    PasswordShort,
    #[error("global.country must be two lower-case letters, not {0:?}")]
    Country(String),
    #[error("unknown keyboard layout {0:?}")]
    Keyboard(String),
    #[error("global.fqdn {0:?} is not a fully qualified domain name (host.domain, DNS labels)")]
    Fqdn(String),
    #[error("global.mailto {0:?} is not an e-mail address")]
    Mailto(String),
    #[error("global.timezone {0:?} is not a time zone name such as Europe/Vienna or UTC")]
    Timezone(String),
    #[error("global.root-ssh-keys entry {0} is not a single-line public key")]
    SshKey(usize),
    #[error("network.{0} is only allowed with source = \"from-answer\"")]
    NetworkKeyWithDhcp(&'static str),
    #[error("network.{0} is required with source = \"from-answer\"")]
    NetworkKeyMissing(&'static str),
    #[error("{section}.filter key {key:?} is not a udev property name (A-Z, 0-9, _)")]
    FilterKey { section: &'static str, key: String },
    #[error("{section}.filter value for {key} must be a non-empty single-line glob")]
    FilterValue { section: &'static str, key: String },
    #[error("disk-setup needs either disk-list or filter")]
    NoDisks,
    #[error("disk-setup cannot have both disk-list and filter")]
    DiskListAndFilter,
    #[error("disk-setup.filter-match is only allowed with disk-setup.filter")]
    FilterMatchWithoutFilter,
    #[error("disk-setup.disk-list contains {0:?} twice")]
    DuplicateDisk(String),
    #[error("disk-setup.disk-list entry {0:?} is not a device name such as sda or nvme0n1")]
    DiskName(String),
    #[error("{filesystem} uses exactly one disk, {count} given")]
    OneDiskOnly {
        filesystem: &'static str,
        count: usize,
    },
    #[error("disk-setup.{0} options do not apply to filesystem {1}")]
    OptionsForOtherFs(&'static str, &'static str),
    #[error("disk-setup.{0}.raid must be set for filesystem {0}")]
    RaidMissing(&'static str),
    #[error("btrfs supports raid0, raid1 and raid10 only, not {0}")]
    BtrfsRaid(&'static str),
    #[error("{raid} needs at least {min} disks, {count} given")]
    TooFewDisks {
        raid: &'static str,
        min: usize,
        count: usize,
    },
    #[error("disk-setup.zfs.ashift must be between 9 and 16, not {0}")]
    Ashift(u8),
    #[error("disk-setup hdsize must be at least 2 GiB, not {0}")]
    Hdsize(f64),
    #[error("disk-setup.lvm.swapsize must be between 0 and hdsize / 2 ({max} GiB), not {swapsize}")]
    Swapsize { swapsize: f64, max: f64 },
    #[error("{0}.url must be an http:// or https:// URL")]
    Url(&'static str),
    #[error("{0}.cert-fingerprint must be a SHA-256 fingerprint (32 hex bytes separated by ':')")]
    CertFingerprint(&'static str),
    #[error("first-boot.url is required with source = \"from-url\"")]
    FirstBootUrlMissing,
    #[error("first-boot.url is only allowed with source = \"from-url\"")]
    FirstBootUrlWithIso,
    #[error("host {0} has no disk: declare disks on the host or a boot-disk on its server type")]
    NoDiskDeclared(String),
    #[error("host {host} with zfs on {count} disks needs a raid level")]
    ZfsRaidUndeclared { host: String, count: usize },
    #[error("host {0} declares a static network without a DNS server")]
    NoDns(String),
    #[error("cannot serialize the answer: {0}")]
    Serialize(String),
}

/// A crypt(3) password hash of a kind the installer's `chpasswd -e` accepts:
/// `$6$` (sha512-crypt), `$5$` (sha256-crypt) or `$y$` (yescrypt).
/// Its `Debug` is redacted; it is only ever written into an answer file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Accepts what [`crate::secrets::validate_crypt_hash`] accepts (one
    /// rule for the credential file and the answer), without a trailing newline.
    pub fn parse(s: &str) -> Result<PasswordHash, AnswerError> {
        let s = s.trim_end_matches(['\n', '\r']);
        crate::secrets::validate_crypt_hash(s).map_err(|_| AnswerError::PasswordHash)?;
        Ok(PasswordHash(s.to_owned()))
    }

    /// The crypt string, for writing into the answer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

impl TryFrom<String> for PasswordHash {
    type Error = AnswerError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PasswordHash::parse(&s)
    }
}

impl From<PasswordHash> for String {
    fn from(h: PasswordHash) -> String {
        h.0
    }
}

/// A plain-text root password (`root-password`). We never produce one, but
/// the type exists so [`validate`] can apply the installer's rule that
/// exactly one password form is set. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlainPassword(pub String);

impl fmt::Debug for PlainPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainPassword(<redacted>)")
    }
}

/// The installer's keyboard layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keyboard {
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

impl FromStr for Keyboard {
    type Err = AnswerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Keyboard::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| AnswerError::Keyboard(s.chars().take(32).collect()))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootMode {
    #[default]
    Reboot,
    PowerOff,
}

/// `[global]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Global {
    pub keyboard: Keyboard,
    pub country: String,
    pub fqdn: String,
    pub mailto: String,
    pub timezone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_password: Option<PlainPassword>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_password_hashed: Option<PasswordHash>,
    pub root_ssh_keys: Vec<String>,
    pub reboot_on_error: bool,
    pub reboot_mode: RebootMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkSource {
    FromDhcp,
    FromAnswer,
}

/// `[network]`, as the file has it: the static keys are options so that
/// [`validate`] can check the installer's rule about them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Network {
    pub source: NetworkSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<ipnet::IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// udev property → glob, e.g. `ID_NET_NAME_MAC = "*5847ca71021e"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMatch {
    Any,
    All,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ZfsOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ashift: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdsize: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LvmOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdsize: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swapsize: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BtrfsOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdsize: Option<f64>,
}

/// `[disk-setup]`, as the file has it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiskSetup {
    pub filesystem: Filesystem,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disk_list: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_match: Option<FilterMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zfs: Option<ZfsOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvm: Option<LvmOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btrfs: Option<BtrfsOptions>,
}

/// `[post-installation-webhook]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Webhook {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstBootSource {
    FromUrl,
    FromIso,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstBootOrdering {
    BeforeNetwork,
    NetworkOnline,
    FullyUp,
}

/// `[first-boot]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FirstBoot {
    pub source: FirstBootSource,
    pub ordering: FirstBootOrdering,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
}

/// A whole answer file.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Answer {
    pub global: Global,
    pub network: Network,
    pub disk_setup: DiskSetup,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_installation_webhook: Option<Webhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_boot: Option<FirstBoot>,
}

/// Site-wide answer settings (from the daemon's settings).
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerDefaults {
    pub keyboard: Keyboard,
    /// ISO 3166-1 alpha-2, lower-case (`at`, `de`, `us`).
    pub country: String,
    pub timezone: String,
    pub mailto: String,
    /// The DNS domain: the FQDN is `<host name>.<domain>`.
    pub domain: String,
    pub reboot_on_error: bool,
    pub reboot_mode: RebootMode,
}

/// Everything one answer is made from.
#[derive(Clone, Debug)]
pub struct AnswerParams<'a> {
    pub host: &'a Host,
    /// The host's server type, when it names one that exists.
    pub server_type: Option<&'a ServerType>,
    pub defaults: &'a AnswerDefaults,
    pub root_password_hash: &'a PasswordHash,
    /// This rebuild's ephemeral public key, one OpenSSH line.
    pub ssh_public_key: &'a str,
    /// `…/api/hosts/<name>/installed/<token>`.
    pub webhook_url: Option<String>,
    /// `…/api/hosts/<name>/first-boot-script/<token>`.
    pub first_boot_url: Option<String>,
    /// SHA-256 fingerprint of our TLS certificate, for https URLs.
    pub cert_fingerprint: Option<String>,
}

/// Builds and validates the answer for `params.host`.
pub fn build_answer(p: &AnswerParams<'_>) -> Result<Answer, AnswerError> {
    let host = p.host;
    let name = host.name.as_str();
    let global = Global {
        keyboard: p.defaults.keyboard,
        country: p.defaults.country.clone(),
        fqdn: format!("{name}.{}", p.defaults.domain.trim_matches('.')),
        mailto: p.defaults.mailto.clone(),
        timezone: p.defaults.timezone.clone(),
        root_password: None,
        root_password_hashed: Some(p.root_password_hash.clone()),
        root_ssh_keys: vec![p.ssh_public_key.trim().to_owned()],
        reboot_on_error: p.defaults.reboot_on_error,
        reboot_mode: p.defaults.reboot_mode,
    };

    let network = match &host.network {
        None => Network {
            source: NetworkSource::FromDhcp,
            cidr: None,
            dns: None,
            gateway: None,
            filter: BTreeMap::new(),
        },
        Some(net) => Network {
            source: NetworkSource::FromAnswer,
            cidr: Some(net.cidr),
            dns: Some(
                *net.dns
                    .first()
                    .ok_or_else(|| AnswerError::NoDns(name.to_owned()))?,
            ),
            gateway: Some(net.gateway),
            filter: BTreeMap::from([(
                "ID_NET_NAME_MAC".to_owned(),
                format!("*{}", hex::encode(host.mac.octets())),
            )]),
        },
    };

    let disk_setup = disk_setup(name, &merge_disk(&host.disk, p.server_type))?;

    let answer = Answer {
        global,
        network,
        disk_setup,
        post_installation_webhook: p.webhook_url.as_ref().map(|url| Webhook {
            url: url.clone(),
            cert_fingerprint: p.cert_fingerprint.clone(),
        }),
        first_boot: p.first_boot_url.as_ref().map(|url| FirstBoot {
            source: FirstBootSource::FromUrl,
            ordering: FirstBootOrdering::NetworkOnline,
            url: Some(url.clone()),
            cert_fingerprint: p.cert_fingerprint.clone(),
        }),
    };
    validate(&answer)?;
    Ok(answer)
}

/// The host's disk spec over its server type's, field by field; the server
/// type's boot disk is the default disk list.
fn merge_disk(host: &DiskSpec, server_type: Option<&ServerType>) -> DiskSpec {
    let empty = DiskSpec::default();
    let st = server_type.map(|s| &s.disk).unwrap_or(&empty);
    let boot_disk = server_type
        .and_then(|s| s.boot_disk.clone())
        .map(|d| DiskSelection::List(vec![d]));
    DiskSpec {
        filesystem: host.filesystem.or(st.filesystem),
        disks: host
            .disks
            .clone()
            .or_else(|| st.disks.clone())
            .or(boot_disk),
        raid: host.raid.or(st.raid),
        zfs_ashift: host.zfs_ashift.or(st.zfs_ashift),
        hdsize: host.hdsize.or(st.hdsize),
        swapsize: host.swapsize.or(st.swapsize),
    }
}

/// Maps a resolved disk spec onto `[disk-setup]`. Options that do not fit
/// the filesystem are passed through so that [`validate`] names them.
fn disk_setup(host: &str, spec: &DiskSpec) -> Result<DiskSetup, AnswerError> {
    let filesystem = spec.filesystem.unwrap_or(Filesystem::Ext4);
    let (disk_list, filter, filter_match) = match &spec.disks {
        None => return Err(AnswerError::NoDiskDeclared(host.to_owned())),
        Some(DiskSelection::List(disks)) => (disks.clone(), BTreeMap::new(), None),
        Some(DiskSelection::Filter { props, match_all }) => (
            Vec::new(),
            props.clone(),
            Some(if *match_all {
                FilterMatch::All
            } else {
                FilterMatch::Any
            }),
        ),
    };
    let mut setup = DiskSetup {
        filesystem,
        disk_list,
        filter,
        filter_match,
        zfs: None,
        lvm: None,
        btrfs: None,
    };
    match filesystem {
        Filesystem::Zfs => {
            let raid = match spec.raid {
                Some(r) => r,
                None if setup.disk_list.len() == 1 => RaidLevel::Raid0,
                None => {
                    return Err(AnswerError::ZfsRaidUndeclared {
                        host: host.to_owned(),
                        count: setup.disk_list.len(),
                    });
                }
            };
            setup.zfs = Some(ZfsOptions {
                raid: Some(raid),
                ashift: spec.zfs_ashift,
                hdsize: spec.hdsize,
            });
            if spec.swapsize.is_some() {
                setup.lvm = Some(LvmOptions {
                    hdsize: None,
                    swapsize: spec.swapsize,
                });
            }
        }
        Filesystem::Btrfs => {
            setup.btrfs = Some(BtrfsOptions {
                raid: Some(spec.raid.unwrap_or(RaidLevel::Raid0)),
                hdsize: spec.hdsize,
            });
            if spec.swapsize.is_some() {
                setup.lvm = Some(LvmOptions {
                    hdsize: None,
                    swapsize: spec.swapsize,
                });
            }
            if spec.zfs_ashift.is_some() {
                setup.zfs = Some(ZfsOptions {
                    ashift: spec.zfs_ashift,
                    ..ZfsOptions::default()
                });
            }
        }
        Filesystem::Ext4 | Filesystem::Xfs => {
            if spec.hdsize.is_some() || spec.swapsize.is_some() {
                setup.lvm = Some(LvmOptions {
                    hdsize: spec.hdsize,
                    swapsize: spec.swapsize,
                });
            }
            if spec.raid.is_some() || spec.zfs_ashift.is_some() {
                setup.zfs = Some(ZfsOptions {
                    raid: spec.raid,
                    ashift: spec.zfs_ashift,
                    hdsize: None,
                });
            }
        }
    }
    Ok(setup)
}

fn fs_name(fs: Filesystem) -> &'static str {
    match fs {
        Filesystem::Ext4 => "ext4",
        Filesystem::Xfs => "xfs",
        Filesystem::Zfs => "zfs",
        Filesystem::Btrfs => "btrfs",
    }
}

fn raid_name(r: RaidLevel) -> &'static str {
    match r {
        RaidLevel::Raid0 => "raid0",
        RaidLevel::Raid1 => "raid1",
        RaidLevel::Raid10 => "raid10",
        RaidLevel::RaidZ1 => "raidz-1",
        RaidLevel::RaidZ2 => "raidz-2",
        RaidLevel::RaidZ3 => "raidz-3",
    }
}

fn min_disks(r: RaidLevel) -> usize {
    match r {
        RaidLevel::Raid0 => 1,
        RaidLevel::Raid1 => 2,
        RaidLevel::Raid10 => 4,
        RaidLevel::RaidZ1 => 3,
        RaidLevel::RaidZ2 => 4,
        RaidLevel::RaidZ3 => 5,
    }
}

/// Applies the installer's own rules (and a few of ours that keep the
/// answer unambiguous). The first violation is returned.
pub fn validate(a: &Answer) -> Result<(), AnswerError> {
    validate_global(&a.global)?;
    validate_network(&a.network)?;
    validate_disks(&a.disk_setup)?;
    if let Some(w) = &a.post_installation_webhook {
        check_url(&w.url, "post-installation-webhook")?;
        check_fingerprint(w.cert_fingerprint.as_deref(), "post-installation-webhook")?;
    }
    if let Some(fb) = &a.first_boot {
        match (fb.source, &fb.url) {
            (FirstBootSource::FromUrl, None) => return Err(AnswerError::FirstBootUrlMissing),
            (FirstBootSource::FromUrl, Some(url)) => check_url(url, "first-boot")?,
            (FirstBootSource::FromIso, Some(_)) => return Err(AnswerError::FirstBootUrlWithIso),
            (FirstBootSource::FromIso, None) => {}
        }
        check_fingerprint(fb.cert_fingerprint.as_deref(), "first-boot")?;
    }
    Ok(())
}

fn validate_global(g: &Global) -> Result<(), AnswerError> {
    match (&g.root_password, &g.root_password_hashed) {
        (Some(_), Some(_)) | (None, None) => return Err(AnswerError::PasswordForms),
        (Some(p), None) if p.0.chars().count() < 8 => return Err(AnswerError::PasswordShort),
        _ => {}
    }
    if g.country.len() != 2 || !g.country.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(AnswerError::Country(g.country.chars().take(32).collect()));
    }
    if !is_fqdn(&g.fqdn) {
        return Err(AnswerError::Fqdn(g.fqdn.chars().take(300).collect()));
    }
    if !is_mailto(&g.mailto) {
        return Err(AnswerError::Mailto(g.mailto.chars().take(300).collect()));
    }
    let tz_ok = !g.timezone.is_empty()
        && g.timezone.len() <= 64
        && !g.timezone.starts_with('/')
        && !g.timezone.ends_with('/')
        && !g.timezone.contains("..")
        && g.timezone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    if !tz_ok {
        return Err(AnswerError::Timezone(g.timezone.chars().take(64).collect()));
    }
    for (i, key) in g.root_ssh_keys.iter().enumerate() {
        let k = key.trim();
        if k.is_empty() || k.contains(['\n', '\r']) || k.split_whitespace().count() < 2 {
            return Err(AnswerError::SshKey(i));
        }
    }
    Ok(())
}

fn is_fqdn(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        // The last label (TLD) is not all digits, or it would be an address.
        && labels.last().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

fn is_mailto(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && s.len() <= 254
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

fn validate_network(n: &Network) -> Result<(), AnswerError> {
    let keys: [(&'static str, bool); 4] = [
        ("cidr", n.cidr.is_some()),
        ("dns", n.dns.is_some()),
        ("gateway", n.gateway.is_some()),
        ("filter", !n.filter.is_empty()),
    ];
    match n.source {
        NetworkSource::FromDhcp => {
            if let Some((key, _)) = keys.iter().find(|(_, set)| *set) {
                return Err(AnswerError::NetworkKeyWithDhcp(key));
            }
        }
        NetworkSource::FromAnswer => {
            if let Some((key, _)) = keys.iter().find(|(_, set)| !*set) {
                return Err(AnswerError::NetworkKeyMissing(key));
            }
            check_filter(&n.filter, "network")?;
        }
    }
    Ok(())
}

fn check_filter(
    filter: &BTreeMap<String, String>,
    section: &'static str,
) -> Result<(), AnswerError> {
    for (key, value) in filter {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(AnswerError::FilterKey {
                section,
                key: key.chars().take(64).collect(),
            });
        }
        if value.is_empty() || value.chars().any(|c| c.is_control()) {
            return Err(AnswerError::FilterValue {
                section,
                key: key.clone(),
            });
        }
    }
    Ok(())
}

fn validate_disks(d: &DiskSetup) -> Result<(), AnswerError> {
    match (d.disk_list.is_empty(), d.filter.is_empty()) {
        (true, true) => return Err(AnswerError::NoDisks),
        (false, false) => return Err(AnswerError::DiskListAndFilter),
        _ => {}
    }
    if d.filter_match.is_some() && d.filter.is_empty() {
        return Err(AnswerError::FilterMatchWithoutFilter);
    }
    check_filter(&d.filter, "disk-setup")?;
    let mut seen = BTreeSet::new();
    for disk in &d.disk_list {
        let name_ok = !disk.is_empty()
            && disk.len() <= 64
            && disk
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
            && !disk.starts_with('.');
        if !name_ok {
            return Err(AnswerError::DiskName(disk.chars().take(64).collect()));
        }
        if !seen.insert(disk.as_str()) {
            return Err(AnswerError::DuplicateDisk(disk.clone()));
        }
    }
    let fs = fs_name(d.filesystem);
    let count = d.disk_list.len();
    let check_min = |raid: RaidLevel| {
        let min = min_disks(raid);
        if !d.disk_list.is_empty() && count < min {
            return Err(AnswerError::TooFewDisks {
                raid: raid_name(raid),
                min,
                count,
            });
        }
        Ok(())
    };
    let check_hdsize = |h: Option<f64>| match h {
        Some(h) if !(h >= 2.0 && h.is_finite()) => Err(AnswerError::Hdsize(h)),
        _ => Ok(()),
    };
    match d.filesystem {
        Filesystem::Ext4 | Filesystem::Xfs => {
            if d.zfs.is_some() {
                return Err(AnswerError::OptionsForOtherFs("zfs", fs));
            }
            if d.btrfs.is_some() {
                return Err(AnswerError::OptionsForOtherFs("btrfs", fs));
            }
            if count > 1 {
                return Err(AnswerError::OneDiskOnly {
                    filesystem: fs,
                    count,
                });
            }
            if let Some(lvm) = &d.lvm {
                check_hdsize(lvm.hdsize)?;
                if let Some(swap) = lvm.swapsize {
                    let max = lvm.hdsize.map(|h| h / 2.0).unwrap_or(f64::INFINITY);
                    if !(swap >= 0.0 && swap <= max) {
                        return Err(AnswerError::Swapsize {
                            swapsize: swap,
                            max,
                        });
                    }
                }
            }
        }
        Filesystem::Zfs => {
            if d.lvm.is_some() {
                return Err(AnswerError::OptionsForOtherFs("lvm", fs));
            }
            if d.btrfs.is_some() {
                return Err(AnswerError::OptionsForOtherFs("btrfs", fs));
            }
            let zfs = d.zfs.as_ref().ok_or(AnswerError::RaidMissing("zfs"))?;
            let raid = zfs.raid.ok_or(AnswerError::RaidMissing("zfs"))?;
            check_min(raid)?;
            if let Some(a) = zfs.ashift
                && !(9..=16).contains(&a)
            {
                return Err(AnswerError::Ashift(a));
            }
            check_hdsize(zfs.hdsize)?;
        }
        Filesystem::Btrfs => {
            if d.lvm.is_some() {
                return Err(AnswerError::OptionsForOtherFs("lvm", fs));
            }
            if d.zfs.is_some() {
                return Err(AnswerError::OptionsForOtherFs("zfs", fs));
            }
            let btrfs = d.btrfs.as_ref().ok_or(AnswerError::RaidMissing("btrfs"))?;
            let raid = btrfs.raid.ok_or(AnswerError::RaidMissing("btrfs"))?;
            if !matches!(
                raid,
                RaidLevel::Raid0 | RaidLevel::Raid1 | RaidLevel::Raid10
            ) {
                return Err(AnswerError::BtrfsRaid(raid_name(raid)));
            }
            check_min(raid)?;
            check_hdsize(btrfs.hdsize)?;
        }
    }
    Ok(())
}

fn check_url(url: &str, section: &'static str) -> Result<(), AnswerError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok(())
        }
        _ => Err(AnswerError::Url(section)),
    }
}

fn check_fingerprint(fp: Option<&str>, section: &'static str) -> Result<(), AnswerError> {
    let Some(fp) = fp else { return Ok(()) };
    let parts: Vec<&str> = fp.split(':').collect();
    let ok = parts.len() == 32
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(AnswerError::CertFingerprint(section))
    }
}

/// The answer as TOML (what the installer gets by default). Validates first.
pub fn to_toml(a: &Answer) -> Result<String, AnswerError> {
    validate(a)?;
    toml::to_string(a).map_err(|e| AnswerError::Serialize(e.to_string()))
}

/// The answer as JSON (installer 9.2+, served with `Content-Type:
/// application/json`). Validates first.
pub fn to_json(a: &Answer) -> Result<String, AnswerError> {
    validate(a)?;
    serde_json::to_string_pretty(a).map_err(|e| AnswerError::Serialize(e.to_string()))
}
