//! What the Proxmox installer tells us: the system information it POSTs to
//! fetch its answer (schema 1.0, snake_case) and the post-installation
//! webhook payload (schema 1.2, kebab-case).
//!
//! Parsers only. They are lenient where the installer may add fields in a
//! minor schema version (unknown fields are ignored, parts we do not need are
//! optional) and strict where we rely on a value (a MAC that does not parse
//! is skipped by [`SystemInfo::macs`], never guessed). Bodies larger than
//! [`MAX_BODY_BYTES`] are refused before parsing; every error is a value,
//! nothing here panics on input. Nothing here decides whether a host gets an
//! answer: the handler does that with these values.

use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest body either parser accepts (the handler should refuse larger
/// bodies before reading them).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SysinfoError {
    #[error("body is {0} bytes, more than the {MAX_BODY_BYTES} allowed")]
    TooLarge(usize),
    #[error("body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("body is not a JSON object")]
    NotAnObject,
}

/// `$schema` of either document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SchemaVersion {
    #[serde(default)]
    pub version: String,
}

/// A DMI section (`system`, `baseboard`, `chassis`): string values by key;
/// values of other JSON types are kept but ignored by the accessors.
pub type DmiSection = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Dmi {
    #[serde(default)]
    pub system: DmiSection,
    #[serde(default)]
    pub baseboard: DmiSection,
    #[serde(default)]
    pub chassis: DmiSection,
}

impl Dmi {
    /// The normalized `system.uuid`, see [`normalize_uuid`].
    pub fn system_uuid(&self) -> Option<String> {
        self.system
            .get("uuid")
            .and_then(|v| v.as_str())
            .and_then(normalize_uuid)
    }

    /// `system.serial` as reported, if it is a string.
    pub fn system_serial(&self) -> Option<&str> {
        self.system.get("serial").and_then(|v| v.as_str())
    }
}

/// Lower-case hyphenated form of a DMI UUID, or `None` when it is malformed
/// or a well-known placeholder (all zeros, all `f`, the
/// `03000200-0400-0500-0006-000700080009` many boards ship), which identifies
/// nothing.
pub fn normalize_uuid(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12]
        || !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex: String = groups.concat();
    if hex.bytes().all(|b| b == b'0')
        || hex.bytes().all(|b| b == b'f')
        || s == "03000200-0400-0500-0006-000700080009"
    {
        return None;
    }
    Some(s)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Product {
    #[serde(default)]
    pub fullname: String,
    #[serde(default)]
    pub product: String,
    #[serde(default)]
    pub enable_btrfs: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Iso {
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub isorelease: String,
}

/// One NIC as the installer lists it. The MAC is kept as sent; use
/// [`SystemInfo::macs`] for the ones that parse.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct NetworkInterface {
    #[serde(default)]
    pub link: String,
    #[serde(default)]
    pub mac: String,
}

/// The body of `POST /api/boot/answer` (schema 1.0).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct SystemInfo {
    #[serde(rename = "$schema", default)]
    pub schema: Option<SchemaVersion>,
    #[serde(default)]
    pub product: Option<Product>,
    #[serde(default)]
    pub iso: Option<Iso>,
    #[serde(default)]
    pub dmi: Dmi,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
}

impl SystemInfo {
    pub fn parse(body: &[u8]) -> Result<SystemInfo, SysinfoError> {
        parse_limited(body)
    }

    /// Every MAC that parses, sorted and without duplicates.
    pub fn macs(&self) -> Vec<MacAddr> {
        let mut macs: Vec<MacAddr> = self
            .network_interfaces
            .iter()
            .filter_map(|n| n.mac.parse().ok())
            .collect();
        macs.sort();
        macs.dedup();
        macs
    }

    /// The normalized DMI system UUID, if there is a usable one.
    pub fn dmi_uuid(&self) -> Option<String> {
        self.dmi.system_uuid()
    }
}

/// `product` in the webhook payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ProductInfo {
    #[serde(default)]
    pub fullname: String,
    #[serde(default)]
    pub short: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Efi,
    Bios,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct BootInfo {
    pub mode: BootMode,
    #[serde(default)]
    pub secureboot: bool,
}

/// One NIC of the installed system.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstalledInterface {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// CIDR, present on the management NIC only.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub is_management: bool,
    #[serde(default)]
    pub is_pinned: bool,
    #[serde(default)]
    pub udev_properties: BTreeMap<String, serde_json::Value>,
}

/// The installed system's SSH host keys, OpenSSH public key lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SshHostKeys {
    #[serde(default)]
    pub ecdsa: Option<String>,
    #[serde(default)]
    pub ed25519: Option<String>,
    #[serde(default)]
    pub rsa: Option<String>,
}

impl SshHostKeys {
    /// The keys that are present, strongest first: `(algorithm, line)`.
    pub fn present(&self) -> Vec<(&'static str, &str)> {
        [
            ("ed25519", &self.ed25519),
            ("ecdsa", &self.ecdsa),
            ("rsa", &self.rsa),
        ]
        .into_iter()
        .filter_map(|(alg, k)| {
            k.as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| (alg, k))
        })
        .collect()
    }
}

/// The post-installation webhook body (schema 1.2, kebab-case). The host keys
/// and the FQDN are required (we pin the keys); the rest is optional.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstalledReport {
    #[serde(rename = "$schema", default)]
    pub schema: Option<SchemaVersion>,
    pub fqdn: String,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub debian_version: Option<String>,
    #[serde(default)]
    pub product: Option<ProductInfo>,
    #[serde(default)]
    pub iso: Option<Iso>,
    #[serde(default)]
    pub kernel_version: Option<serde_json::Value>,
    #[serde(default)]
    pub boot_info: Option<BootInfo>,
    #[serde(default)]
    pub cpu_info: Option<serde_json::Value>,
    #[serde(default)]
    pub dmi: Dmi,
    #[serde(default)]
    pub filesystem: Option<String>,
    #[serde(default)]
    pub disks: Vec<serde_json::Value>,
    #[serde(default)]
    pub network_interfaces: Vec<InstalledInterface>,
    pub ssh_public_host_keys: SshHostKeys,
    #[serde(default)]
    pub reboot_mode: Option<String>,
}

impl InstalledReport {
    pub fn parse(body: &[u8]) -> Result<InstalledReport, SysinfoError> {
        parse_limited(body)
    }

    /// The address (with prefix) of the NIC the installer configured as the
    /// management interface, if it reported one that parses.
    pub fn management_address(&self) -> Option<ipnet::IpNet> {
        self.management_interface()
            .and_then(|n| n.address.as_deref())
            .and_then(|a| a.trim().parse().ok())
    }

    /// The MAC of the management interface, if it parses.
    pub fn management_mac(&self) -> Option<MacAddr> {
        self.management_interface().and_then(|n| n.mac.parse().ok())
    }

    fn management_interface(&self) -> Option<&InstalledInterface> {
        self.network_interfaces.iter().find(|n| n.is_management)
    }

    /// The normalized DMI system UUID, if there is a usable one.
    pub fn dmi_uuid(&self) -> Option<String> {
        self.dmi.system_uuid()
    }
}

fn parse_limited<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SysinfoError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(SysinfoError::TooLarge(body.len()));
    }
    // Through a `Value` first: serde would also accept a top-level array
    // for a struct whose fields all have defaults.
    let value: serde_json::Value = serde_json::from_slice(body)?;
    if !value.is_object() {
        return Err(SysinfoError::NotAnObject);
    }
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_normalization() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(normalize_uuid(input).as_deref(), expected, "{input:?}");
        };
        check(
            "4C4C4544-0039-3010-8048-B4C04F4E4B32",
            Some("4c4c4544-0039-3010-8048-b4c04f4e4b32"),
        );
        check(
            " 12345678-1234-1234-1234-123456789abc\n",
            Some("12345678-1234-1234-1234-123456789abc"),
        );
        check("00000000-0000-0000-0000-000000000000", None);
        check("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None);
        check("03000200-0400-0500-0006-000700080009", None);
        check("12345678123412341234123456789abc", None);
        check("1234567-81234-1234-1234-123456789abc", None);
        check("g2345678-1234-1234-1234-123456789abc", None);
        check("", None);
        check("Not Specified", None);
    }

    #[test]
    fn too_large_is_refused_before_parsing() {
        let body = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            SystemInfo::parse(&body),
            Err(SysinfoError::TooLarge(n)) if n == MAX_BODY_BYTES + 1
        ));
    }
}
