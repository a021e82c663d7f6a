//! The answer file as the Proxmox auto-installer (9.x) reads it, rule for rule: every
//! table rejects unknown keys, kebab-case keys (snake_case aliases accepted), required
//! `[global]` keys, exactly one password form, `[network]` keys only with
//! `source = "from-answer"`, `disk-list` xor `filter`, per-filesystem option tables,
//! the known enums. It must never be more lenient than the real installer: a daemon
//! bug that the real installer would reject has to fail the end-to-end test too.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Answer {
    pub global: Global,
    pub network: Network,
    #[serde(rename = "disk-setup")]
    pub disk_setup: DiskSetup,
    #[serde(default)]
    pub post_installation_webhook: Option<Webhook>,
    #[serde(default)]
    pub first_boot: Option<FirstBoot>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Global {
    pub country: String,
    pub fqdn: Fqdn,
    pub keyboard: Keyboard,
    pub mailto: String,
    pub timezone: String,
    #[serde(alias = "root_password")]
    pub root_password: Option<String>,
    #[serde(alias = "root_password_hashed")]
    pub root_password_hashed: Option<String>,
    #[serde(alias = "reboot_on_error", default)]
    pub reboot_on_error: bool,
    #[serde(alias = "reboot_mode", default)]
    pub reboot_mode: RebootMode,
    #[serde(alias = "root_ssh_keys", default)]
    pub root_ssh_keys: Vec<String>,
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum RebootMode {
    #[default]
    Reboot,
    PowerOff,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Fqdn {
    Simple(String),
    Extended(FqdnExtended),
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FqdnExtended {
    #[serde(default)]
    pub source: FqdnSource,
    pub domain: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FqdnSource {
    #[default]
    FromDhcp,
}

#[derive(Deserialize, Debug)]
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

#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkSource {
    #[default]
    FromDhcp,
    FromAnswer,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub source: NetworkSource,
    pub cidr: Option<String>,
    pub dns: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub filter: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
    Xfs,
    Zfs,
    Btrfs,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "lowercase")]
pub enum FilterMatch {
    Any,
    All,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiskSetup {
    pub filesystem: Filesystem,
    #[serde(alias = "disk_list", default)]
    pub disk_list: Vec<String>,
    pub filter: Option<BTreeMap<String, String>>,
    #[serde(alias = "filter_match")]
    pub filter_match: Option<FilterMatch>,
    pub zfs: Option<ZfsOptions>,
    pub lvm: Option<LvmOptions>,
    pub btrfs: Option<BtrfsOptions>,
}

#[derive(Deserialize, Debug)]
pub enum ZfsRaid {
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

#[derive(Deserialize, Debug)]
#[serde(rename_all = "lowercase")]
pub enum BtrfsRaid {
    Raid0,
    Raid1,
    Raid10,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ZfsOptions {
    pub raid: Option<ZfsRaid>,
    pub ashift: Option<usize>,
    #[serde(alias = "arc_max")]
    pub arc_max: Option<usize>,
    pub checksum: Option<String>,
    pub compress: Option<String>,
    pub copies: Option<usize>,
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
    pub raid: Option<BtrfsRaid>,
    pub compress: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(alias = "cert_fingerprint")]
    pub cert_fingerprint: Option<String>,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum FirstBootSource {
    FromUrl,
    FromIso,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FirstBootOrdering {
    BeforeNetwork,
    NetworkOnline,
    #[default]
    FullyUp,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FirstBoot {
    pub source: FirstBootSource,
    #[serde(default)]
    pub ordering: FirstBootOrdering,
    pub url: Option<String>,
    #[serde(alias = "cert_fingerprint")]
    pub cert_fingerprint: Option<String>,
}

/// Parses and verifies an answer the way the installer does; the error text mirrors
/// the installer's ("Failed parsing answer file: …" for schema errors).
pub fn parse(text: &str, is_json: bool) -> Result<Answer, String> {
    let answer: Answer = if is_json {
        serde_json::from_str(text).map_err(|e| format!("Failed parsing answer file: {e}"))?
    } else {
        toml::from_str(text).map_err(|e| format!("Failed parsing answer file: {e}"))?
    };
    verify(&answer)?;
    Ok(answer)
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

pub fn check_fqdn(fqdn: &str) -> Result<(), String> {
    let labels: Vec<&str> = fqdn.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|l| valid_label(l)) || fqdn.len() > 253 {
        return Err(format!("Failed parsing answer file: invalid FQDN '{fqdn}'"));
    }
    if labels[0].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "Failed parsing answer file: hostname '{}' is numeric",
            labels[0]
        ));
    }
    Ok(())
}

fn verify(a: &Answer) -> Result<(), String> {
    let g = &a.global;
    if let Fqdn::Simple(f) = &g.fqdn {
        check_fqdn(f)?;
    }
    match (&g.root_password, &g.root_password_hashed) {
        (Some(_), Some(_)) => {
            return Err("`global.root_password` and `global.root_password_hashed` cannot be set at the same time".into());
        }
        (None, None) => {
            return Err(
                "One of `global.root_password` or `global.root_password_hashed` must be set".into(),
            );
        }
        (Some(p), None) if p.len() < 8 => {
            return Err("`global.root_password` must be at least 8 characters long".into());
        }
        (None, Some(h)) if !h.starts_with('$') => {
            return Err("`global.root_password_hashed` is not a crypt(3) hash".into());
        }
        _ => {}
    }
    if g.country.len() != 2 || !g.country.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!("country code '{}' is not valid", g.country));
    }
    for k in &g.root_ssh_keys {
        let t = k.split_whitespace().next().unwrap_or("");
        if !(t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")) {
            return Err(format!(
                "root-ssh-keys entry is not an OpenSSH public key: {k:?}"
            ));
        }
    }

    let n = &a.network;
    if n.source == NetworkSource::FromAnswer {
        for (name, set) in [
            ("cidr", n.cidr.is_some()),
            ("dns", n.dns.is_some()),
            ("gateway", n.gateway.is_some()),
            ("filter", n.filter.is_some()),
        ] {
            if !set {
                return Err(format!(
                    "Failed parsing answer file: Field '{name}' must be set."
                ));
            }
        }
        let cidr = n.cidr.as_deref().unwrap_or("");
        let ok = cidr.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
        });
        if !ok {
            return Err(format!("Failed parsing answer file: invalid cidr '{cidr}'"));
        }
    } else {
        for (name, set) in [
            ("cidr", n.cidr.is_some()),
            ("dns", n.dns.is_some()),
            ("gateway", n.gateway.is_some()),
            ("filter", n.filter.is_some()),
        ] {
            if set {
                return Err(format!(
                    "Failed parsing answer file: Field '{name}' not supported for 'from-dhcp' config."
                ));
            }
        }
    }

    let d = &a.disk_setup;
    if d.disk_list.is_empty() && d.filter.is_none() {
        return Err("Failed parsing answer file: Need either 'disk-list' or 'filter' set".into());
    }
    if !d.disk_list.is_empty() && d.filter.is_some() {
        return Err("Failed parsing answer file: Cannot use both, 'disk-list' and 'filter'".into());
    }
    match d.filesystem {
        Filesystem::Ext4 | Filesystem::Xfs => {
            if d.zfs.is_some() || d.btrfs.is_some() {
                return Err(
                    "Failed parsing answer file: make sure only 'lvm' options are set".into(),
                );
            }
            if d.disk_list.len() > 1 {
                return Err("Failed parsing answer file: make sure to define only one disk for ext4 and xfs".into());
            }
        }
        Filesystem::Zfs => {
            if d.lvm.is_some() || d.btrfs.is_some() {
                return Err(
                    "Failed parsing answer file: make sure only 'zfs' options are set".into(),
                );
            }
            if d.zfs.as_ref().is_none_or(|z| z.raid.is_none()) {
                return Err(
                    "Failed parsing answer file: ZFS raid level 'zfs.raid' must be set".into(),
                );
            }
        }
        Filesystem::Btrfs => {
            if d.zfs.is_some() || d.lvm.is_some() {
                return Err(
                    "Failed parsing answer file: make sure only 'btrfs' options are set".into(),
                );
            }
            if d.btrfs.as_ref().is_none_or(|b| b.raid.is_none()) {
                return Err(
                    "Failed parsing answer file: BTRFS raid level 'btrfs.raid' must be set".into(),
                );
            }
        }
    }

    if let Some(fb) = &a.first_boot {
        match fb.source {
            FirstBootSource::FromUrl if fb.url.is_none() => {
                return Err("first-boot: 'url' must be set for source 'from-url'".into());
            }
            FirstBootSource::FromIso => {
                return Err(
                    "first-boot: 'from-iso' needs a script baked into the ISO; this ISO has none"
                        .into(),
                );
            }
            _ => {}
        }
    }
    if let Some(w) = &a.post_installation_webhook {
        crate::http::parse_url(&w.url)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[global]
keyboard = "en-us"
country = "de"
fqdn = "pve-01.lab.example"
mailto = "root@example.invalid"
timezone = "UTC"
root-password-hashed = "$6$salt$hash"
root-ssh-keys = ["ssh-ed25519 AAAA test"]

[network]
source = "from-dhcp"

[disk-setup]
filesystem = "ext4"
disk-list = ["vda"]

[post-installation-webhook]
url = "http://10.0.0.1:8080/api/hosts/x/installed"

[first-boot]
source = "from-url"
url = "http://10.0.0.1:8080/api/hosts/x/first-boot-script"
"#;

    #[test]
    fn good_answer_parses() {
        parse(GOOD, false).unwrap();
    }

    #[test]
    fn rejections() {
        let cases = [
            ("timezone = \"UTC\"", "timezone = \"UTC\"\nbogus = 1"),
            (
                "root-password-hashed = \"$6$salt$hash\"",
                "root-password-hashed = \"$6$salt$hash\"\nroot-password = \"abcdefghij\"",
            ),
            ("root-password-hashed = \"$6$salt$hash\"", ""),
            (
                "source = \"from-dhcp\"",
                "source = \"from-dhcp\"\ncidr = \"10.0.0.5/24\"",
            ),
            (
                "disk-list = [\"vda\"]",
                "disk-list = [\"vda\"]\nfilter.ID_SERIAL = \"*\"",
            ),
            ("disk-list = [\"vda\"]", ""),
            ("\"en-us\"", "\"us\""),
            ("\"ext4\"", "\"zfs\""),
            ("pve-01.lab.example", "pve_01"),
        ];
        for (from, to) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert!(parse(&text, false).is_err(), "accepted: {to}");
        }
    }
}
