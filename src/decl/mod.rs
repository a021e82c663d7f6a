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

/// One problem in a declaration file, compiler style.
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
    /// `path:line:column: message` (the form `provisioning check` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
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
