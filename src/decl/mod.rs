//! Host and server-type declarations: `hosts.d/*.kdl` and `server-types.yaml`.
//!
//! Two layers (see STYLE.md): the KDL/YAML wire form is decoded with spans,
//! then validated into the domain types below, which cannot be wrong (a
//! [`MacAddr`], a [`HostName`] that is a DNS label). The result is an
//! immutable [`Snapshot`] that the rest of the daemon reads; nothing outside
//! this module ever reads `hosts.d`.
//!
//! Errors are [`Diagnostic`]s with file, line and column. A file with an error
//! keeps its last valid version in force; an error never retires a host.

pub mod kdl;
pub mod loader;
mod source;
pub mod yaml;

pub use loader::{DeclLoader, LoaderStats};

use crate::mac::MacAddr;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A host name: a valid DNS label (1–63 of `a-z0-9-`, not starting or ending
/// with `-`), stored lower-case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HostName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid host name {0:?}: must be a DNS label (1-63 characters a-z, 0-9, '-', not starting or ending with '-')"
)]
pub struct HostNameError(pub String);

impl HostName {
    pub fn parse(s: &str) -> Result<HostName, HostNameError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(HostName(s.to_ascii_lowercase()))
        } else {
            Err(HostNameError(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where a declaration came from (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLoc {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a declaration file, compiler style. `line` and `column`
/// are 1-based; both are 0 for a problem with a whole file or directory
/// (unreadable, not UTF-8 before any position is known, not in force).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    /// The offending source line, for text output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `path:line:column: severity: message` (the form `provisioning check`
    /// prints); `path: severity: message` for a problem with a whole file
    /// (line 0).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            return write!(f, "{}: {sev}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
    Xfs,
    Zfs,
    Btrfs,
}

/// ZFS (and btrfs) RAID levels, named as the Proxmox answer file names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RaidLevel {
    #[serde(rename = "raid0")]
    Raid0,
    #[serde(rename = "raid1")]
    Raid1,
    #[serde(rename = "raid10")]
    Raid10,
    #[serde(rename = "raidz-1")]
    RaidZ1,
    #[serde(rename = "raidz-2")]
    RaidZ2,
    #[serde(rename = "raidz-3")]
    RaidZ3,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSelection {
    /// `disk-list = ["nvme0n1", …]`
    List(Vec<String>),
    /// `filter.<UDEV_PROP> = "glob"` with `filter-match`.
    Filter {
        props: BTreeMap<String, String>,
        match_all: bool,
    },
}

/// Disk settings as declared: every field optional, a host's spec overrides
/// its server type's, field by field.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DiskSpec {
    pub filesystem: Option<Filesystem>,
    pub disks: Option<DiskSelection>,
    pub raid: Option<RaidLevel>,
    pub zfs_ashift: Option<u8>,
    /// Size in GB of the part of the disk(s) used (`zfs.hdsize`/`lvm.hdsize`).
    pub hdsize: Option<f64>,
    /// `lvm.swapsize` in GB.
    pub swapsize: Option<f64>,
}

/// A static management network (`[network] source = "from-answer"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaticNetwork {
    pub cidr: ipnet::IpNet,
    pub gateway: std::net::IpAddr,
    pub dns: Vec<std::net::IpAddr>,
}

/// A server type: hardware model defaults shared by hosts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerType {
    pub key: String,
    pub display_name: String,
    pub boot_disk: Option<String>,
    pub management_nic: Option<String>,
    pub gpu: bool,
    pub disk: DiskSpec,
    pub source: SourceLoc,
}

/// A validated host declaration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Host {
    pub name: HostName,
    pub mac: MacAddr,
    pub server_type: String,
    /// Desired generation; 0 = leave alone.
    pub rebuild: u64,
    pub network: Option<StaticNetwork>,
    pub disk: DiskSpec,
    pub wake_on_lan: bool,
    pub source: SourceLoc,
}

/// The validated view of `hosts.d` and the server types at one moment.
/// Immutable; replaced as a whole on reload.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sorted by name: iteration is deterministic.
    pub hosts: BTreeMap<HostName, Arc<Host>>,
    pub by_mac: HashMap<MacAddr, HostName>,
    pub server_types: BTreeMap<String, Arc<ServerType>>,
    /// Every current problem, sorted by file, line, column.
    pub diagnostics: Vec<Diagnostic>,
}

impl Snapshot {
    pub fn host_by_mac(&self, mac: &MacAddr) -> Option<&Arc<Host>> {
        self.by_mac.get(mac).and_then(|n| self.hosts.get(n))
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// A position inside a declaration file, with the source line for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub column: usize,
    pub snippet: Option<String>,
}

/// A host as one file declares it, with the positions the loader needs for
/// cross-file diagnostics (duplicate names and MACs, unknown server types).
#[derive(Clone, Debug)]
pub struct DeclaredHost {
    pub host: Arc<Host>,
    pub name_at: At,
    pub mac_at: At,
    pub server_type_at: At,
}

/// A server type as one file declares it.
#[derive(Clone, Debug)]
pub struct DeclaredServerType {
    pub server_type: Arc<ServerType>,
    pub key_at: At,
}

/// Everything one file declares, decoded and checked on its own. Cross-file
/// rules (uniqueness, known server types) are the loader's.
#[derive(Clone, Debug, Default)]
pub struct FileDecls {
    pub hosts: Vec<DeclaredHost>,
    pub server_types: Vec<DeclaredServerType>,
    /// Problems found in this file alone.
    pub diagnostics: Vec<Diagnostic>,
}

impl FileDecls {
    /// A file version is valid on its own when it has no error.
    pub fn is_valid(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// The disk layout a host gets: the host's own settings over its server
/// type's, field by field; the server type's `boot_disk` is the default disk
/// list when neither names disks.
pub fn resolve_disk(host: &Host, st: &ServerType) -> DiskSpec {
    let h = &host.disk;
    let s = &st.disk;
    DiskSpec {
        filesystem: h.filesystem.or(s.filesystem),
        disks: h
            .disks
            .clone()
            .or_else(|| s.disks.clone())
            .or_else(|| st.boot_disk.clone().map(|d| DiskSelection::List(vec![d]))),
        raid: h.raid.or(s.raid),
        zfs_ashift: h.zfs_ashift.or(s.zfs_ashift),
        hdsize: h.hdsize.or(s.hdsize),
        swapsize: h.swapsize.or(s.swapsize),
    }
}

pub const FILESYSTEMS: &[&str] = &["ext4", "xfs", "zfs", "btrfs"];
pub const RAID_LEVELS: &[&str] = &["raid0", "raid1", "raid10", "raidz-1", "raidz-2", "raidz-3"];

impl Filesystem {
    pub fn parse(s: &str) -> Result<Filesystem, String> {
        match s {
            "ext4" => Ok(Filesystem::Ext4),
            "xfs" => Ok(Filesystem::Xfs),
            "zfs" => Ok(Filesystem::Zfs),
            "btrfs" => Ok(Filesystem::Btrfs),
            _ => Err(unknown_value("filesystem", s, FILESYSTEMS)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
            Filesystem::Zfs => "zfs",
            Filesystem::Btrfs => "btrfs",
        }
    }
}

impl RaidLevel {
    pub fn parse(s: &str) -> Result<RaidLevel, String> {
        match s {
            "raid0" => Ok(RaidLevel::Raid0),
            "raid1" => Ok(RaidLevel::Raid1),
            "raid10" => Ok(RaidLevel::Raid10),
            "raidz-1" => Ok(RaidLevel::RaidZ1),
            "raidz-2" => Ok(RaidLevel::RaidZ2),
            "raidz-3" => Ok(RaidLevel::RaidZ3),
            _ => Err(unknown_value("raid level", s, RAID_LEVELS)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid10 => "raid10",
            RaidLevel::RaidZ1 => "raidz-1",
            RaidLevel::RaidZ2 => "raidz-2",
            RaidLevel::RaidZ3 => "raidz-3",
        }
    }

    fn is_raidz(self) -> bool {
        matches!(
            self,
            RaidLevel::RaidZ1 | RaidLevel::RaidZ2 | RaidLevel::RaidZ3
        )
    }
}

/// Which field of a [`DiskSpec`] a consistency problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskField {
    Raid,
    Ashift,
    Swapsize,
}

/// Combinations the Proxmox installer rejects, checked once the filesystem
/// is known: RAID only with zfs/btrfs (raidz only with zfs), `ashift` only
/// with zfs, `swapsize` only with the LVM filesystems (ext4, xfs).
pub fn disk_conflicts(spec: &DiskSpec) -> Vec<(DiskField, String)> {
    let mut out = Vec::new();
    let Some(fs) = spec.filesystem else {
        return out;
    };
    if let Some(raid) = spec.raid {
        match fs {
            Filesystem::Ext4 | Filesystem::Xfs => out.push((
                DiskField::Raid,
                format!(
                    "raid {} needs filesystem zfs or btrfs, not {}",
                    raid.as_str(),
                    fs.as_str()
                ),
            )),
            Filesystem::Btrfs if raid.is_raidz() => out.push((
                DiskField::Raid,
                format!(
                    "raid {} needs filesystem zfs (btrfs supports raid0, raid1, raid10)",
                    raid.as_str()
                ),
            )),
            _ => {}
        }
    }
    if spec.zfs_ashift.is_some() && fs != Filesystem::Zfs {
        out.push((
            DiskField::Ashift,
            format!("ashift needs filesystem zfs, not {}", fs.as_str()),
        ));
    }
    if spec.swapsize.is_some() && matches!(fs, Filesystem::Zfs | Filesystem::Btrfs) {
        out.push((
            DiskField::Swapsize,
            format!(
                "swapsize needs filesystem ext4 or xfs (lvm), not {}",
                fs.as_str()
            ),
        ));
    }
    out
}

/// `unknown <what> "x": expected one of a, b (did you mean "a"?)`
pub(crate) fn unknown_value(what: &str, got: &str, known: &[&str]) -> String {
    let shown: String = got.chars().take(64).collect();
    let mut msg = format!(
        "unknown {what} {shown:?}: expected one of {}",
        known.join(", ")
    );
    if let Some(s) = did_you_mean(got, known) {
        msg.push_str(&format!(" (did you mean {s:?}?)"));
    }
    msg
}

/// The known name closest to a typo, when it is close enough to be a guess.
pub(crate) fn did_you_mean<'k>(got: &str, known: &[&'k str]) -> Option<&'k str> {
    if got.len() > 64 {
        return None;
    }
    let got = got.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&got, k), *k))
        .filter(|&(d, k)| d > 0 && d <= (k.len() / 3).max(1))
        // On a tie, the candidate sharing the longer prefix: "raidz1" is
        // "raidz-1", not "raid1".
        .min_by_key(|&(d, k)| {
            let common = got
                .bytes()
                .zip(k.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            (d, std::cmp::Reverse(common))
        })
        .map(|(_, k)| k)
}

/// Edit distance counting an adjacent swap as one edit ("mca" -> "mac").
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Server-type keys, disk and NIC names end up in answer files, iPXE and
/// shell scripts: only a conservative character set is accepted.
pub(crate) fn check_word(what: &str, s: &str, extra: &[u8], max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || extra.contains(&b)
        });
    if ok {
        Ok(())
    } else {
        let shown: String = s.chars().take(64).collect();
        let extra: String = extra.iter().map(|&b| format!(" '{}'", b as char)).collect();
        Err(format!(
            "invalid {what} {shown:?}: use 1-{max} characters a-z, A-Z, 0-9, '-', '_', '.'{extra}"
        ))
    }
}

pub(crate) fn check_server_type_key(s: &str) -> Result<(), String> {
    check_word("server type name", s, &[], 64)
}

pub(crate) fn check_disk_name(s: &str) -> Result<(), String> {
    check_word("disk name", s, b"/:+", 128)
}

pub(crate) fn check_nic_name(s: &str) -> Result<(), String> {
    check_word("interface name", s, &[], 15)
}

/// Free text shown to people (display names): no control characters.
pub(crate) fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.chars().any(char::is_control) || s.chars().count() > 128 {
        Err(format!(
            "invalid {what}: at most 128 characters, no control characters"
        ))
    } else {
        Ok(())
    }
}

/// A udev property name in a disk filter (`ID_MODEL`, `ID_SERIAL`, …).
pub(crate) fn check_udev_prop(s: &str) -> Result<(), String> {
    check_word("udev property", s, &[], 64)
}

/// A glob in a disk filter: free text without control characters or quotes.
pub(crate) fn check_glob(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        Err(format!(
            "invalid filter pattern {:?}: 1-128 characters, no control characters, quotes or backslashes",
            s.chars().take(64).collect::<String>()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("ext5", FILESYSTEMS), Some("ext4"));
        assert_eq!(did_you_mean("mca", &["mac", "rebuild"]), Some("mac"));
        assert_eq!(did_you_mean("zzzzzz", FILESYSTEMS), None);
        assert_eq!(did_you_mean("raidz1", RAID_LEVELS), Some("raidz-1"));
    }

    #[test]
    fn conflicts() {
        let spec = DiskSpec {
            filesystem: Some(Filesystem::Ext4),
            raid: Some(RaidLevel::Raid1),
            zfs_ashift: Some(12),
            ..DiskSpec::default()
        };
        let got: Vec<_> = disk_conflicts(&spec).into_iter().map(|c| c.0).collect();
        assert_eq!(got, vec![DiskField::Raid, DiskField::Ashift]);
        let spec = DiskSpec {
            filesystem: Some(Filesystem::Btrfs),
            raid: Some(RaidLevel::RaidZ2),
            swapsize: Some(4.0),
            ..DiskSpec::default()
        };
        let got: Vec<_> = disk_conflicts(&spec).into_iter().map(|c| c.0).collect();
        assert_eq!(got, vec![DiskField::Raid, DiskField::Swapsize]);
    }
}
