//! Daemon settings (`provisioning.yaml`): a wire layer that mirrors the file
//! (unknown keys rejected, with line and column) and the typed [`Settings`]
//! built from it by `TryFrom`, which cannot hold an invalid combination.
//!
//! Secrets are never values here, only file paths (`*_file`), so that systemd
//! `LoadCredential=` can supply them and they never enter the Nix store.
//! This module reads no secret file itself.

use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The wire form: exactly the YAML, all keys optional, unknown keys errors.
mod wire {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Settings {
        pub server: Server,
        pub paths: Paths,
        pub pxe: Pxe,
        pub proxmox: Proxmox,
        pub answer: Answer,
        pub infrastructure: Infrastructure,
        pub join: Join,
        pub deadlines: BTreeMap<String, String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Server {
        pub listen: Option<String>,
        pub public_url: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Paths {
        pub hosts_dir: Option<String>,
        pub extra_hosts_dirs: Vec<String>,
        pub server_types: Option<String>,
        pub state_dir: Option<String>,
        pub templates_dir: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Pxe {
        pub enable: bool,
        pub interface: Option<String>,
        pub subnet: Option<String>,
        pub server_address: Option<String>,
        pub dnsmasq: Option<String>,
        pub dnsmasq_binary: Option<String>,
        pub ipxe_dir: Option<String>,
        pub discover_unknown: bool,
        pub hostsdir: Option<String>,
        pub kernel_args: Option<String>,
        pub wol_broadcast: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Proxmox {
        pub iso: Option<String>,
        pub iso_sha256: Option<String>,
        pub kernel: Option<String>,
        pub initrd: Option<String>,
        pub existing_node: Option<String>,
        pub join_fingerprint: Option<String>,
        pub join_password_file: Option<String>,
        pub answer_token_file: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Answer {
        pub keyboard: Option<String>,
        pub country: Option<String>,
        pub timezone: Option<String>,
        pub mailto: Option<String>,
        pub domain: Option<String>,
        pub root_password_hash_file: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Infrastructure {
        pub base_url: Option<String>,
        pub token_file: Option<String>,
        pub server_type_map: BTreeMap<String, String>,
        pub timeout: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    pub struct Join {
        pub ssh_port: Option<u16>,
        pub connect_timeout: Option<String>,
        pub pvecm: Option<String>,
        pub authorized_keys: Option<Vec<String>>,
        pub member_check: Option<String>,
    }
}

/// How dnsmasq runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsmasqMode {
    /// The daemon runs it as a supervised child.
    Spawn,
    /// A systemd unit runs it (NixOS: `provisioning-dnsmasq.service`).
    External,
    /// No PXE service from us (tests, or PXE answered elsewhere).
    Off,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// The file these came from (`None`: embedded defaults).
    pub source: Option<PathBuf>,
    pub server: ServerSettings,
    pub paths: PathSettings,
    pub pxe: Option<PxeSettings>,
    pub proxmox: ProxmoxSettings,
    pub answer: AnswerSettings,
    pub infrastructure: InfrastructureSettings,
    pub join: JoinSettings,
    pub deadlines: DeadlineSettings,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Base URL machines use to reach us, without a trailing slash.
    pub public_url: String,
    /// Whether `public_url` was set; otherwise it follows the address the
    /// daemon actually bound (`--listen 127.0.0.1:0`).
    pub public_url_explicit: bool,
}

#[derive(Clone, Debug)]
pub struct PathSettings {
    pub hosts_dir: PathBuf,
    pub extra_hosts_dirs: Vec<PathBuf>,
    pub server_types: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub templates_dir: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct PxeSettings {
    pub interface: String,
    pub subnet: Ipv4Net,
    pub server_address: Ipv4Addr,
    pub dnsmasq: DnsmasqMode,
    pub dnsmasq_binary: PathBuf,
    pub ipxe_dir: PathBuf,
    pub discover_unknown: bool,
    pub hostsdir: PathBuf,
    pub kernel_args: String,
    pub wol_broadcast: Ipv4Addr,
}

#[derive(Clone, Debug, Default)]
pub struct ProxmoxSettings {
    pub iso: Option<PathBuf>,
    pub iso_sha256: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub existing_node: Option<String>,
    pub join_fingerprint: Option<String>,
    pub join_password_file: Option<PathBuf>,
    pub answer_token_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct AnswerSettings {
    pub keyboard: String,
    pub country: String,
    pub timezone: String,
    pub mailto: String,
    pub domain: String,
    pub root_password_hash_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct InfrastructureSettings {
    /// `None`: registration is skipped.
    pub base_url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub server_type_map: BTreeMap<String, String>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct JoinSettings {
    pub ssh_port: u16,
    pub connect_timeout: Duration,
    pub pvecm: String,
    pub authorized_keys: Vec<String>,
    pub member_check: String,
}

/// How long each active state may last before the rebuild fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineSettings {
    pub pxe_ready: Duration,
    pub pxe_booted: Duration,
    pub installing: Duration,
    pub installed: Duration,
    pub first_boot: Duration,
    pub joining: Duration,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        DeadlineSettings {
            pxe_ready: Duration::from_secs(30 * 60),
            pxe_booted: Duration::from_secs(30 * 60),
            installing: Duration::from_secs(60 * 60),
            installed: Duration::from_secs(30 * 60),
            first_boot: Duration::from_secs(15 * 60),
            joining: Duration::from_secs(30 * 60),
        }
    }
}

impl Settings {
    /// Reads and validates a settings file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::parse(
            &text,
            Some(path),
            &std::env::current_dir().unwrap_or_default(),
        )
    }

    /// The embedded defaults: listen on 127.0.0.1:8080, `./hosts.d`, state
    /// under `$STATE_DIRECTORY` or `./state`, PXE off.
    pub fn embedded_default() -> Result<Settings, SettingsError> {
        Settings::parse("", None, &std::env::current_dir().unwrap_or_default())
    }

    /// Parses settings text; relative paths are resolved against `base`.
    pub fn parse(text: &str, path: Option<&Path>, base: &Path) -> Result<Settings, SettingsError> {
        let shown = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<settings>"));
        let wire: wire::Settings = if text.trim().is_empty() {
            wire::Settings::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                SettingsError::Syntax {
                    path: shown.clone(),
                    line,
                    column,
                    message: first_line(&e.to_string()),
                }
            })?
        };
        Settings::from_wire(wire, path, base)
    }

    fn from_wire(
        w: wire::Settings,
        path: Option<&Path>,
        base: &Path,
    ) -> Result<Settings, SettingsError> {
        let shown = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<settings>"));
        let invalid = |key: &'static str, message: String| SettingsError::Invalid {
            path: shown.clone(),
            key,
            message,
        };
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let duration = |key: &'static str, v: &str| -> Result<Duration, SettingsError> {
            humantime::parse_duration(v)
                .map_err(|e| invalid(key, format!("{v:?} is not a duration like \"30m\": {e}")))
        };

        let listen: SocketAddr = w
            .server
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8080")
            .parse()
            .map_err(|e| invalid("server.listen", format!("expected address:port: {e}")))?;
        let public_url_explicit = w.server.public_url.is_some();
        let public_url = match w.server.public_url {
            Some(u) => {
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'')
                {
                    return Err(invalid(
                        "server.public_url",
                        format!(
                            "{u:?} must be an http:// or https:// URL without spaces or quotes"
                        ),
                    ));
                }
                u.trim_end_matches('/').to_string()
            }
            None => format!("http://{listen}"),
        };

        let state_dir = match w.paths.state_dir {
            Some(p) => resolve(&p),
            None => match std::env::var_os("STATE_DIRECTORY") {
                // systemd may pass several colon-separated directories; the first is ours.
                Some(v) => PathBuf::from(
                    v.to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => base.join("state"),
            },
        };
        let paths = PathSettings {
            hosts_dir: resolve(w.paths.hosts_dir.as_deref().unwrap_or("hosts.d")),
            extra_hosts_dirs: w
                .paths
                .extra_hosts_dirs
                .iter()
                .map(|p| resolve(p))
                .collect(),
            server_types: w.paths.server_types.as_deref().map(resolve),
            templates_dir: w.paths.templates_dir.as_deref().map(resolve),
            state_dir,
        };

        let pxe = if w.pxe.enable {
            let interface = w.pxe.interface.ok_or_else(|| {
                invalid("pxe.interface", "required when pxe.enable is true".into())
            })?;
            if interface.is_empty()
                || interface.len() > 15
                || !interface
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            {
                return Err(invalid(
                    "pxe.interface",
                    format!("{interface:?} is not an interface name"),
                ));
            }
            let subnet: Ipv4Net = w
                .pxe
                .subnet
                .as_deref()
                .ok_or_else(|| invalid("pxe.subnet", "required when pxe.enable is true".into()))?
                .parse()
                .map_err(|e| {
                    invalid(
                        "pxe.subnet",
                        format!("expected an IPv4 CIDR like 192.168.1.0/24: {e}"),
                    )
                })?;
            let server_address: Ipv4Addr = w
                .pxe
                .server_address
                .as_deref()
                .ok_or_else(|| {
                    invalid(
                        "pxe.server_address",
                        "required when pxe.enable is true".into(),
                    )
                })?
                .parse()
                .map_err(|e| {
                    invalid(
                        "pxe.server_address",
                        format!("expected an IPv4 address: {e}"),
                    )
                })?;
            if !subnet.contains(&server_address) {
                return Err(invalid(
                    "pxe.server_address",
                    format!("{server_address} is not inside pxe.subnet {subnet}"),
                ));
            }
            let dnsmasq = match w.pxe.dnsmasq.as_deref().unwrap_or("spawn") {
                "spawn" => DnsmasqMode::Spawn,
                "external" => DnsmasqMode::External,
                "off" => DnsmasqMode::Off,
                other => {
                    return Err(invalid(
                        "pxe.dnsmasq",
                        format!("{other:?}: expected spawn, external or off"),
                    ));
                }
            };
            let wol_broadcast = match w.pxe.wol_broadcast.as_deref() {
                Some(s) => s.parse().map_err(|e| {
                    invalid(
                        "pxe.wol_broadcast",
                        format!("expected an IPv4 address: {e}"),
                    )
                })?,
                None => subnet.broadcast(),
            };
            let kernel_args = w.pxe.kernel_args.unwrap_or_default();
            if kernel_args.chars().any(|c| c.is_control() || c == '"') {
                return Err(invalid(
                    "pxe.kernel_args",
                    "must not contain quotes or control characters".into(),
                ));
            }
            Some(PxeSettings {
                interface,
                subnet,
                server_address,
                dnsmasq,
                dnsmasq_binary: PathBuf::from(w.pxe.dnsmasq_binary.as_deref().unwrap_or("dnsmasq")),
                ipxe_dir: resolve(w.pxe.ipxe_dir.as_deref().unwrap_or("/usr/lib/ipxe")),
                discover_unknown: w.pxe.discover_unknown,
                hostsdir: w
                    .pxe
                    .hostsdir
                    .as_deref()
                    .map(resolve)
                    .unwrap_or_else(|| paths.state_dir.join("dnsmasq-hosts")),
                kernel_args,
                wol_broadcast,
            })
        } else {
            None
        };

        if let Some(sha) = &w.proxmox.iso_sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid(
                "proxmox.iso_sha256",
                "expected 64 hex digits".into(),
            ));
        }
        let safe_word = |key: &'static str, v: &Option<String>| -> Result<(), SettingsError> {
            match v {
                Some(s)
                    if s.is_empty()
                        || s.chars().any(|c| {
                            c.is_whitespace() || c.is_control() || "'\"`$;&|<>\\".contains(c)
                        }) =>
                {
                    Err(invalid(
                        key,
                        format!("{s:?} must be a single word without shell metacharacters"),
                    ))
                }
                _ => Ok(()),
            }
        };
        safe_word("proxmox.existing_node", &w.proxmox.existing_node)?;
        safe_word("proxmox.join_fingerprint", &w.proxmox.join_fingerprint)?;
        if let Some(fp) = &w.proxmox.join_fingerprint {
            let parts: Vec<&str> = fp.split(':').collect();
            if parts.len() != 32
                || !parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(invalid(
                    "proxmox.join_fingerprint",
                    "expected the SHA-256 fingerprint of the existing node's API certificate: 32 colon-separated hex bytes (pvecm status / GUI Join Information)".into(),
                ));
            }
        }
        let proxmox = ProxmoxSettings {
            iso: w.proxmox.iso.as_deref().map(resolve),
            iso_sha256: w.proxmox.iso_sha256.map(|s| s.to_ascii_lowercase()),
            kernel: w.proxmox.kernel.as_deref().map(resolve),
            initrd: w.proxmox.initrd.as_deref().map(resolve),
            existing_node: w.proxmox.existing_node,
            join_fingerprint: w.proxmox.join_fingerprint,
            join_password_file: w.proxmox.join_password_file.as_deref().map(resolve),
            answer_token_file: w.proxmox.answer_token_file.as_deref().map(resolve),
        };

        let answer = AnswerSettings {
            keyboard: w.answer.keyboard.unwrap_or_else(|| "en-us".into()),
            country: w.answer.country.unwrap_or_else(|| "us".into()),
            timezone: w.answer.timezone.unwrap_or_else(|| "UTC".into()),
            mailto: w.answer.mailto.unwrap_or_else(|| "root@localhost".into()),
            domain: w.answer.domain.unwrap_or_else(|| "lan".into()),
            root_password_hash_file: w.answer.root_password_hash_file.as_deref().map(resolve),
        };
        if answer.country.len() != 2 || !answer.country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid(
                "answer.country",
                format!("{:?} is not a two-letter country code", answer.country),
            ));
        }

        let base_url = w.infrastructure.base_url.filter(|u| !u.trim().is_empty());
        if let Some(u) = &base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(
                "infrastructure.base_url",
                format!("{u:?} must be an http:// or https:// URL"),
            ));
        }
        let infrastructure = InfrastructureSettings {
            base_url: base_url.map(|u| u.trim_end_matches('/').to_string()),
            token_file: w.infrastructure.token_file.as_deref().map(resolve),
            server_type_map: w.infrastructure.server_type_map,
            timeout: match w.infrastructure.timeout.as_deref() {
                Some(v) => duration("infrastructure.timeout", v)?,
                None => Duration::from_secs(10),
            },
        };

        let join = JoinSettings {
            ssh_port: w.join.ssh_port.unwrap_or(22),
            connect_timeout: match w.join.connect_timeout.as_deref() {
                Some(v) => duration("join.connect_timeout", v)?,
                None => Duration::from_secs(10),
            },
            pvecm: w.join.pvecm.unwrap_or_else(|| "pvecm".into()),
            authorized_keys: w.join.authorized_keys.unwrap_or_else(|| {
                vec![
                    "/root/.ssh/authorized_keys".into(),
                    "/etc/pve/priv/authorized_keys".into(),
                ]
            }),
            member_check: w
                .join
                .member_check
                .unwrap_or_else(|| "test -e /etc/pve/corosync.conf".into()),
        };

        let mut deadlines = DeadlineSettings::default();
        for (key, value) in &w.deadlines {
            let d = duration("deadlines", value)?;
            match key.as_str() {
                "pxe_ready" => deadlines.pxe_ready = d,
                "pxe_booted" => deadlines.pxe_booted = d,
                "installing" => deadlines.installing = d,
                "installed" => deadlines.installed = d,
                "first_boot" => deadlines.first_boot = d,
                "joining" => deadlines.joining = d,
                other => {
                    return Err(invalid(
                        "deadlines",
                        format!(
                            "unknown state {other:?}: expected pxe_ready, pxe_booted, installing, installed, first_boot or joining"
                        ),
                    ));
                }
            }
        }

        Ok(Settings {
            source: path.map(Path::to_path_buf),
            server: ServerSettings {
                listen,
                public_url,
                public_url_explicit,
            },
            paths,
            pxe,
            proxmox,
            answer,
            infrastructure,
            join,
            deadlines,
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::parse(text, Some(Path::new("p.yaml")), Path::new("/base"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn empty_is_the_embedded_default() {
        let s = parse("").unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.paths.hosts_dir, PathBuf::from("/base/hosts.d"));
        assert!(s.pxe.is_none());
        assert!(s.infrastructure.base_url.is_none());
        assert_eq!(s.deadlines, DeadlineSettings::default());
    }

    #[test]
    fn full_file() {
        let s = parse(
            "server:\n  listen: 0.0.0.0:8080\n  public_url: http://10.0.0.2:8080/\n\
             paths:\n  hosts_dir: /etc/hosts.d\n  state_dir: /var/lib/p\n\
             pxe:\n  enable: true\n  interface: br0\n  subnet: 10.0.0.0/24\n  server_address: 10.0.0.2\n  dnsmasq: external\n\
             proxmox:\n  existing_node: pve-00\n\
             infrastructure:\n  base_url: ''\n\
             deadlines:\n  installing: 90m\n",
        )
        .unwrap();
        assert_eq!(s.server.public_url, "http://10.0.0.2:8080");
        let pxe = s.pxe.unwrap();
        assert_eq!(pxe.dnsmasq, DnsmasqMode::External);
        assert_eq!(pxe.hostsdir, PathBuf::from("/var/lib/p/dnsmasq-hosts"));
        assert_eq!(pxe.wol_broadcast.to_string(), "10.0.0.255");
        assert_eq!(s.deadlines.installing, Duration::from_secs(90 * 60));
        assert!(s.infrastructure.base_url.is_none());
    }

    #[test]
    fn errors_are_located_and_clear() {
        let cases: &[(&str, &str)] = &[
            ("server:\n  lisen: x\n", "p.yaml:2:"),
            ("bogus: 1\n", "p.yaml:1:"),
            ("server:\n  listen: nope\n", "server.listen"),
            ("pxe:\n  enable: true\n", "pxe.interface: required"),
            (
                "pxe:\n  enable: true\n  interface: br0\n  subnet: 10.0.0.0/24\n  server_address: 10.1.0.2\n",
                "not inside pxe.subnet",
            ),
            ("deadlines:\n  installing: soon\n", "not a duration"),
            ("deadlines:\n  cooking: 5m\n", "unknown state"),
            (
                "proxmox:\n  existing_node: 'a; rm -rf /'\n",
                "shell metacharacters",
            ),
            ("proxmox:\n  iso_sha256: abc\n", "64 hex digits"),
            (
                "proxmox:\n  join_fingerprint: 'AB:CD'\n",
                "32 colon-separated hex bytes",
            ),
            ("server:\n  public_url: 'ftp://x'\n", "http://"),
        ];
        for (text, want) in cases {
            let err = parse(text).err().unwrap_or_default();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn arbitrary_yamlish_never_panics(s in "([a-z_]{1,8}:( [a-z0-9./:-]{0,12})?\n( {2}[a-z_]{1,8}: [a-z0-9./:-]{0,12}\n){0,3}){0,4}") {
            let _ = parse(&s);
        }
    }
}
