//! dnsmasq as our proxy-DHCP and TFTP server: renders its complete
//! configuration, maintains the `dhcp-hostsdir` of declared MACs, checks a
//! configuration with `dnsmasq --test`, and supervises dnsmasq as a child
//! process (restart with backoff, log lines forwarded into ours, MACs seen
//! reported, stopped on shutdown).
//!
//! One renderer serves every way of running dnsmasq (the NixOS unit calls
//! `provisioning dnsmasq-config`, the daemon's supervisor uses the same
//! text). Every value that reaches a configuration line is validated first;
//! nothing here writes a line built from unchecked text. dnsmasq never hands
//! out addresses (proxy mode only) and never answers DNS (`port=0`). This
//! module knows nothing of hosts or their states: callers pass MACs and tags.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, watch};

use crate::mac::MacAddr;

/// Debian's dnsmasq binary (package `dnsmasq-base`).
pub const DEFAULT_BINARY: &str = "/usr/sbin/dnsmasq";

/// Where Debian's `ipxe` package puts `undionly.kpxe`, `snponly.efi` and
/// `ipxe.efi` (a sensible TFTP root outside NixOS).
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";

/// Everything the configuration is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqParams {
    /// The interface on the PXE network (dnsmasq binds to it only).
    pub interface: String,
    /// The PXE network; proxy-DHCP answers for clients on it.
    pub subnet: Ipv4Net,
    /// Our address on that network: TFTP server and iPXE's next-server.
    pub server_ip: Ipv4Addr,
    /// Base URL of our HTTP server as machines reach it, e.g.
    /// `http://10.0.0.1:8080` (no trailing path needed).
    pub public_url: String,
    /// Directory served by TFTP, holding the iPXE binaries.
    pub tftp_root: PathBuf,
    /// iPXE for BIOS clients, relative to `tftp_root` (`undionly.kpxe`).
    pub bios_file: String,
    /// iPXE for x86-64 UEFI clients (`snponly.efi`, or `ipxe.efi`).
    pub uefi_file: String,
    /// The `dhcp-hostsdir` that [`write_hostsdir`] maintains.
    pub hostsdir: PathBuf,
    /// Answer unknown MACs too (they are chained to iPXE, which sends them
    /// to their local disk, and they show up in the log for discovery).
    pub discover_unknown: bool,
    /// User dnsmasq drops privileges to (`user=`); `None` keeps dnsmasq's
    /// compiled-in default.
    pub user: Option<String>,
}

impl DnsmasqParams {
    /// Parameters with the Debian `ipxe` package's file names.
    pub fn new(
        interface: impl Into<String>,
        subnet: Ipv4Net,
        server_ip: Ipv4Addr,
        public_url: impl Into<String>,
        tftp_root: impl Into<PathBuf>,
        hostsdir: impl Into<PathBuf>,
    ) -> Self {
        DnsmasqParams {
            interface: interface.into(),
            subnet,
            server_ip,
            public_url: public_url.into(),
            tftp_root: tftp_root.into(),
            bios_file: "undionly.kpxe".into(),
            uefi_file: "snponly.efi".into(),
            hostsdir: hostsdir.into(),
            discover_unknown: false,
            user: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {binary}: {source} (is dnsmasq installed? Debian package dnsmasq-base)")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dnsmasq rejected {path}: {message}")]
    ConfigRejected { path: PathBuf, message: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DnsmasqError {
    DnsmasqError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Characters allowed in paths and file names that go into the config: no
/// whitespace, commas (dnsmasq's separator), quotes or `#`.
fn safe_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b'@' | b'=')
}

fn check_abs_path(field: &'static str, path: &Path) -> Result<String, DnsmasqError> {
    let s = path
        .to_str()
        .ok_or_else(|| invalid(field, "path is not UTF-8"))?;
    if !s.starts_with('/') {
        return Err(invalid(field, format!("{s:?} is not an absolute path")));
    }
    if s.len() > 1024 || !s.bytes().all(safe_path_char) {
        return Err(invalid(
            field,
            format!("{s:?} must use only [A-Za-z0-9/._+@=-]"),
        ));
    }
    Ok(s.to_owned())
}

fn check_file_name(field: &'static str, name: &str) -> Result<(), DnsmasqError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && name.bytes().all(safe_path_char)
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{:?} must be a relative path of [A-Za-z0-9/._+@=-] without . or .. components",
                name.chars().take(64).collect::<String>()
            ),
        ))
    }
}

/// Checks `public_url` and returns it without a trailing `/`.
fn check_public_url(url: &str) -> Result<&str, DnsmasqError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.len() <= 512
        && url.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b':' | b'/' | b'.' | b'-' | b'_' | b'~' | b'%' | b'[' | b']'
                )
        });
    if ok {
        Ok(url.trim_end_matches('/'))
    } else {
        Err(invalid(
            "public_url",
            format!(
                "{:?} must be http(s)://host[:port][/path] of [A-Za-z0-9:/._~%[]-]",
                url.chars().take(64).collect::<String>()
            ),
        ))
    }
}

fn check_tag(tag: &str) -> Result<(), DnsmasqError> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        && tag != "known";
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "tag",
            format!(
                "{:?} must be [A-Za-z0-9_-]+ and not `known`",
                tag.chars().take(64).collect::<String>()
            ),
        ))
    }
}

fn check_user(user: &str) -> Result<(), DnsmasqError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid("user", format!("{user:?} is not a user name")))
    }
}

/// Renders the complete dnsmasq configuration.
pub fn render_config(p: &DnsmasqParams) -> Result<String, DnsmasqError> {
    if !crate::boot::wol::valid_interface_name(&p.interface) {
        return Err(invalid(
            "interface",
            format!(
                "{:?} must be 1 to 15 characters of [A-Za-z0-9_.-]",
                p.interface.chars().take(32).collect::<String>()
            ),
        ));
    }
    if !p.subnet.contains(&p.server_ip) {
        return Err(invalid(
            "server_ip",
            format!("{} is not in the PXE subnet {}", p.server_ip, p.subnet),
        ));
    }
    let url = check_public_url(&p.public_url)?;
    let tftp_root = check_abs_path("tftp_root", &p.tftp_root)?;
    let hostsdir = check_abs_path("hostsdir", &p.hostsdir)?;
    check_file_name("bios_file", &p.bios_file)?;
    check_file_name("uefi_file", &p.uefi_file)?;
    if let Some(user) = &p.user {
        check_user(user)?;
    }

    let mut c = String::new();
    // Writing into a String cannot fail; the `let _` keep clippy quiet.
    let _ = writeln!(
        c,
        "# dnsmasq configuration rendered by `provisioning dnsmasq-config`; do not edit.\n\
         # Proxy-DHCP and TFTP only: the LAN's router keeps handing out addresses."
    );
    c.push_str(
        "\n# No DNS, no leases of our own, no pid file (a supervisor runs us in the foreground).\n\
         port=0\nleasefile-ro\npid-file=\n",
    );
    if let Some(user) = &p.user {
        let _ = writeln!(c, "user={user}");
    }
    let _ = writeln!(
        c,
        "\n# Only the PXE interface.\ninterface={}\nbind-interfaces",
        p.interface
    );
    let _ = writeln!(
        c,
        "dhcp-range={},proxy,{}",
        p.subnet.network(),
        p.subnet.netmask()
    );
    let _ = writeln!(
        c,
        "\n# Declared MACs, one file each, re-read by dnsmasq when they change.\ndhcp-hostsdir={hostsdir}"
    );
    if p.discover_unknown {
        c.push_str(
            "# Discovery is on: unknown MACs are answered too (iPXE sends them to their disk).\n",
        );
    } else {
        c.push_str("# Only declared MACs get answers.\ndhcp-ignore=tag:!known\n");
    }
    let _ = writeln!(
        c,
        "\n# TFTP for the iPXE binaries.\nenable-tftp\ntftp-root={tftp_root}"
    );
    c.push_str(
        "\n# Who is asking: iPXE itself (user class or option 175), or firmware by architecture.\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:ipxe,175\n\
         dhcp-match=set:bios,option:client-arch,0\n\
         dhcp-match=set:efi64,option:client-arch,7\n\
         dhcp-match=set:efi64,option:client-arch,9\n",
    );
    let _ = writeln!(
        c,
        "\n# Firmware PXE chain-loads iPXE over TFTP.\n\
         pxe-prompt=\"Provisioning\",0\n\
         pxe-service=tag:!ipxe,x86PC,\"chain iPXE (BIOS)\",{bios}\n\
         pxe-service=tag:!ipxe,X86-64_EFI,\"chain iPXE (UEFI)\",{uefi}\n\
         pxe-service=tag:!ipxe,BC_EFI,\"chain iPXE (UEFI)\",{uefi}",
        bios = p.bios_file,
        uefi = p.uefi_file
    );
    let _ = writeln!(
        c,
        "\n# iPXE fetches its script over HTTP; the next-server is required by\n\
         # iPXE to accept a proxy offer.\n\
         dhcp-boot=tag:ipxe,{url}/ipxe/${{mac:hexhyp}}?platform=${{platform}},,{server}",
        server = p.server_ip
    );
    c.push_str("\n# Log every DHCP decision to stderr for the supervising daemon.\nlog-dhcp\nlog-facility=-\n");
    Ok(c)
}

/// Makes the filesystem ready for dnsmasq and fails clearly when it is
/// not: creates the hostsdir (dnsmasq silently stops watching a hostsdir
/// that is missing when it starts) and checks that the TFTP root holds both
/// iPXE binaries (dnsmasq refuses to start without its TFTP root, and a
/// missing binary would only show up when a machine boots).
pub fn prepare_runtime(p: &DnsmasqParams) -> Result<(), DnsmasqError> {
    check_abs_path("hostsdir", &p.hostsdir)?;
    check_abs_path("tftp_root", &p.tftp_root)?;
    check_file_name("bios_file", &p.bios_file)?;
    check_file_name("uefi_file", &p.uefi_file)?;
    std::fs::create_dir_all(&p.hostsdir).map_err(|source| DnsmasqError::Io {
        path: p.hostsdir.clone(),
        source,
    })?;
    for file in [&p.bios_file, &p.uefi_file] {
        let path = p.tftp_root.join(file);
        match std::fs::File::open(&path).and_then(|f| f.metadata()) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(invalid(
                    "tftp_root",
                    format!("{} is not a regular file", path.display()),
                ));
            }
            Err(source) => {
                return Err(invalid(
                    "tftp_root",
                    format!(
                        "cannot read the iPXE binary {}: {source} (Debian package ipxe provides {DEBIAN_IPXE_DIR})",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What [`write_hostsdir`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsdirChange {
    /// Files created or rewritten.
    pub written: usize,
    /// Stale files removed. dnsmasq only ever *adds* hosts from a
    /// hostsdir, so a removal takes effect at its next restart.
    pub removed: usize,
}

fn hostsdir_file_name(mac: MacAddr) -> String {
    mac.hyphenated()
}

fn is_our_file_name(name: &str) -> bool {
    name.len() == 17 && name.contains('-') && name.parse::<MacAddr>().is_ok()
}

/// Makes `dir` hold exactly one file per entry, named after the MAC
/// (`52-54-00-12-34-56`), each a `dhcp-hostsdir` line `<mac>` or
/// `<mac>,set:<tag>` (a matching `dhcp-host` gives the client dnsmasq's
/// `known` tag). Files are replaced atomically and only when their content
/// changes; our files for MACs no longer listed are removed. Other files in
/// `dir` are left alone.
pub fn write_hostsdir(
    dir: &Path,
    entries: &[(MacAddr, Option<&str>)],
) -> Result<HostsdirChange, DnsmasqError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DnsmasqError::Io { path, source }
    };
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (mac, tag) in entries {
        let line = match tag {
            Some(tag) => {
                check_tag(tag)?;
                format!("{mac},set:{tag}\n")
            }
            None => format!("{mac}\n"),
        };
        if wanted.insert(hostsdir_file_name(*mac), line).is_some() {
            return Err(invalid(
                "hostsdir entries",
                format!("{mac} is listed twice"),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut change = HostsdirChange::default();
    for (name, line) in &wanted {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(current) if current == line.as_bytes() => continue,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        // dnsmasq ignores dot files, so it never reads a half-written one;
        // the rename is the single event it acts on.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, line).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        change.written += 1;
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_our_file_name(name) && !wanted.contains_key(name) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io(&path))?;
            change.removed += 1;
        }
    }
    if change != HostsdirChange::default() {
        tracing::info!(dir = %dir.display(), written = change.written, removed = change.removed, "updated dnsmasq hostsdir");
    }
    Ok(change)
}

/// Runs `dnsmasq --test --conf-file=<path>`: succeeds when dnsmasq accepts
/// the configuration.
pub async fn test_config(binary: &Path, path: &Path) -> Result<(), DnsmasqError> {
    let mut conf_arg = std::ffi::OsString::from("--conf-file=");
    conf_arg.push(path);
    let out = Command::new(binary)
        .arg("--test")
        .arg(conf_arg)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| DnsmasqError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if message.is_empty() {
            message = format!("exit status {}", out.status);
        }
        Err(DnsmasqError::ConfigRejected {
            path: path.to_owned(),
            message,
        })
    }
}

/// How to run and supervise dnsmasq.
#[derive(Debug, Clone)]
pub struct SpawnParams {
    pub binary: PathBuf,
    pub conf_file: PathBuf,
    /// First pause before a restart; doubles after each quick exit.
    pub backoff_initial: Duration,
    /// Longest pause between restarts.
    pub backoff_max: Duration,
    /// A child that ran this long resets the backoff.
    pub stable_after: Duration,
    /// Time between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Duration,
}

impl SpawnParams {
    pub fn new(binary: impl Into<PathBuf>, conf_file: impl Into<PathBuf>) -> Self {
        SpawnParams {
            binary: binary.into(),
            conf_file: conf_file.into(),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// What the supervisor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsmasqState {
    Starting,
    Running,
    /// Waiting to restart after an exit.
    Backoff,
    Stopped,
}

/// The supervisor's status, published through a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqStatus {
    pub state: DnsmasqState,
    pub pid: Option<u32>,
    /// Children started after the first one.
    pub restarts: u64,
    /// How the last child ended (exit status or spawn error).
    pub last_exit: Option<String>,
}

/// A MAC seen in dnsmasq's DHCP log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMac {
    pub mac: MacAddr,
    /// dnsmasq logged that it ignored the request (`ignored` or
    /// `proxy-ignored`: an unknown MAC with discovery off).
    pub ignored: bool,
}

/// Parses a dnsmasq log line such as
/// `dnsmasq-dhcp[7]: PXE(br0) 52:54:00:12:34:56 proxy` or
/// `PXE(br0) 52:54:00:12:34:56 proxy-ignored`.
pub fn parse_seen_mac(line: &str) -> Option<SeenMac> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        let is_event =
            (word.starts_with("DHCPDISCOVER(") || word.starts_with("PXE(")) && word.ends_with(')');
        if !is_event {
            continue;
        }
        let rest: Vec<&str> = words.collect();
        // The MAC is the first or (after an address) second word.
        let mac = rest
            .iter()
            .take(2)
            .find_map(|w| w.parse::<MacAddr>().ok())?;
        // `ignored` for DHCP, `proxy-ignored` for PXE requests.
        let ignored = rest.iter().any(|w| w.ends_with("ignored"));
        return Some(SeenMac { mac, ignored });
    }
    None
}

/// The caller's side of a supervisor.
pub struct SupervisorHandle {
    pub status: watch::Receiver<DnsmasqStatus>,
    /// MACs from `DHCPDISCOVER`/`PXE` log lines. When the receiver lags,
    /// lines are dropped rather than stalling dnsmasq's log.
    pub seen: mpsc::Receiver<SeenMac>,
    restart: Arc<Notify>,
}

impl SupervisorHandle {
    /// Stops the running dnsmasq and starts it again at once (for changes
    /// a hostsdir cannot carry, such as removed MACs or a new config).
    pub fn request_restart(&self) {
        self.restart.notify_one();
    }
}

/// Runs dnsmasq as a supervised child; see [`supervisor`].
pub struct Supervisor {
    params: SpawnParams,
    status: watch::Sender<DnsmasqStatus>,
    seen: mpsc::Sender<SeenMac>,
    restart: Arc<Notify>,
}

/// Creates a supervisor and its handle. Spawn `supervisor.run(shutdown)`.
pub fn supervisor(params: SpawnParams) -> (SupervisorHandle, Supervisor) {
    let (status_tx, status_rx) = watch::channel(DnsmasqStatus {
        state: DnsmasqState::Starting,
        pid: None,
        restarts: 0,
        last_exit: None,
    });
    let (seen_tx, seen_rx) = mpsc::channel(256);
    let restart = Arc::new(Notify::new());
    (
        SupervisorHandle {
            status: status_rx,
            seen: seen_rx,
            restart: restart.clone(),
        },
        Supervisor {
            params,
            status: status_tx,
            seen: seen_tx,
            restart,
        },
    )
}

/// Supervises dnsmasq until `shutdown` completes, without a handle (logs
/// are still forwarded).
pub async fn supervise(params: SpawnParams, shutdown: impl Future<Output = ()>) {
    let (_handle, sup) = supervisor(params);
    sup.run(shutdown).await;
}

enum Ended {
    Exited(String),
    Restart,
    Shutdown,
}

impl Supervisor {
    fn spawn_child(&self) -> std::io::Result<Child> {
        let mut conf_arg = std::ffi::OsString::from("--conf-file=");
        conf_arg.push(&self.params.conf_file);
        let mut child = Command::new(&self.params.binary)
            .arg("--keep-in-foreground")
            .arg(conf_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, self.seen.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, self.seen.clone()));
        }
        Ok(child)
    }

    /// Runs until `shutdown` completes: starts dnsmasq, restarts it with
    /// exponential backoff when it exits, stops it (SIGTERM, then SIGKILL)
    /// on shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = self.params.backoff_initial;
        let mut started_once = false;
        loop {
            if started_once {
                self.status.send_modify(|s| {
                    s.restarts += 1;
                    s.state = DnsmasqState::Starting;
                });
            }
            started_once = true;
            let started = Instant::now();
            let ended = match self.spawn_child() {
                Ok(mut child) => {
                    let pid = child.id();
                    tracing::info!(target: "dnsmasq", pid = ?pid, binary = %self.params.binary.display(), "started dnsmasq");
                    self.status.send_modify(|s| {
                        s.state = DnsmasqState::Running;
                        s.pid = pid;
                    });
                    let ended = tokio::select! {
                        status = child.wait() => Ended::Exited(match status {
                            Ok(st) => st.to_string(),
                            Err(e) => format!("wait failed: {e}"),
                        }),
                        () = self.restart.notified() => Ended::Restart,
                        () = &mut shutdown => Ended::Shutdown,
                    };
                    if !matches!(ended, Ended::Exited(_)) {
                        let status = stop_child(&mut child, self.params.stop_timeout).await;
                        self.status.send_modify(|s| s.last_exit = Some(status));
                    }
                    ended
                }
                Err(e) => Ended::Exited(format!("spawn failed: {e}")),
            };
            self.status.send_modify(|s| s.pid = None);
            match ended {
                Ended::Shutdown => {
                    tracing::info!(target: "dnsmasq", "stopped dnsmasq");
                    self.status.send_modify(|s| s.state = DnsmasqState::Stopped);
                    return;
                }
                Ended::Restart => {
                    tracing::info!(target: "dnsmasq", "restarting dnsmasq on request");
                    backoff = self.params.backoff_initial;
                }
                Ended::Exited(how) => {
                    if started.elapsed() >= self.params.stable_after {
                        backoff = self.params.backoff_initial;
                    }
                    tracing::warn!(target: "dnsmasq", exit = %how, retry_in = ?backoff, "dnsmasq exited");
                    self.status.send_modify(|s| {
                        s.state = DnsmasqState::Backoff;
                        s.last_exit = Some(how);
                    });
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.restart.notified() => {}
                        () = &mut shutdown => {
                            self.status.send_modify(|s| s.state = DnsmasqState::Stopped);
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(self.params.backoff_max);
                }
            }
        }
    }
}

/// SIGTERM, wait up to `timeout`, then SIGKILL. Returns how it ended.
async fn stop_child(child: &mut Child, timeout: Duration) -> String {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        if let Ok(Ok(status)) = tokio::time::timeout(timeout, child.wait()).await {
            return status.to_string();
        }
        tracing::warn!(target: "dnsmasq", pid, "dnsmasq ignored SIGTERM, killing it");
    }
    let _ = child.kill().await;
    match child.wait().await {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Forwards each line of dnsmasq's output into our log and reports MACs.
async fn forward_lines(stream: impl tokio::io::AsyncRead + Unpin, seen: mpsc::Sender<SeenMac>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let lower = line.to_ascii_lowercase();
        if lower.contains("failed") || lower.contains("error") || lower.contains("warning") {
            tracing::warn!(target: "dnsmasq", "{line}");
        } else {
            tracing::info!(target: "dnsmasq", "{line}");
        }
        if let Some(s) = parse_seen_mac(&line)
            && seen.try_send(s).is_err()
        {
            tracing::debug!(target: "dnsmasq", "seen-MAC channel full or closed, dropping");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DnsmasqParams {
        DnsmasqParams::new(
            "br-pxe",
            "10.0.0.0/24".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            "http://10.0.0.1:8080/",
            "/usr/lib/ipxe",
            "/var/lib/provisioning/dnsmasq-hosts",
        )
    }

    fn rejects(f: impl FnOnce(&mut DnsmasqParams), field: &str) {
        let mut p = params();
        f(&mut p);
        match render_config(&p) {
            Err(DnsmasqError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }

    #[test]
    fn validation_rejects_unsafe_values() {
        rejects(|p| p.interface = "eth0\ndhcp-range=x".into(), "interface");
        rejects(|p| p.interface = String::new(), "interface");
        rejects(|p| p.server_ip = "10.0.1.1".parse().unwrap(), "server_ip");
        rejects(|p| p.public_url = "http://x,y".into(), "public_url");
        rejects(
            |p| p.public_url = "http://x/\nenable-ra".into(),
            "public_url",
        );
        rejects(|p| p.public_url = "ftp://x".into(), "public_url");
        rejects(|p| p.public_url = "http://".into(), "public_url");
        rejects(|p| p.tftp_root = "relative/dir".into(), "tftp_root");
        rejects(|p| p.tftp_root = "/a,b".into(), "tftp_root");
        rejects(|p| p.hostsdir = "/a b".into(), "hostsdir");
        rejects(|p| p.hostsdir = "/a\n#".into(), "hostsdir");
        rejects(|p| p.bios_file = "../etc/passwd".into(), "bios_file");
        rejects(|p| p.uefi_file = "/abs.efi".into(), "uefi_file");
        rejects(|p| p.uefi_file = "a\"b".into(), "uefi_file");
        rejects(|p| p.user = Some("Root x".into()), "user");
    }

    #[test]
    fn parses_seen_macs() {
        let check = |line: &str, want: Option<(&str, bool)>| {
            let got = parse_seen_mac(line).map(|s| (s.mac.to_string(), s.ignored));
            assert_eq!(got, want.map(|(m, i)| (m.to_owned(), i)), "{line}");
        };
        check(
            "dnsmasq-dhcp[12]: PXE(br0) 52:54:00:12:34:56 proxy",
            Some(("52:54:00:12:34:56", false)),
        );
        check(
            "Nov 25 10:00:00 dnsmasq-dhcp[12]: 1234 DHCPDISCOVER(br0) 52:54:00:AB:cd:ef ignored",
            Some(("52:54:00:ab:cd:ef", true)),
        );
        check(
            "dnsmasq-dhcp[12]: PXE(br0) 10.0.0.5 52:54:00:12:34:56 undionly.kpxe",
            Some(("52:54:00:12:34:56", false)),
        );
        check(
            "dnsmasq-dhcp[7]: 1084154632 PXE(va) 52:54:00:99:99:99 proxy-ignored",
            Some(("52:54:00:99:99:99", true)),
        );
        check("dnsmasq-dhcp[12]: DHCPDISCOVER(br0) no-mac-here", None);
        check("dnsmasq-tftp[12]: sent /x/undionly.kpxe to 10.0.0.5", None);
        check("", None);
    }

    #[test]
    fn hostsdir_file_names_are_recognised() {
        assert!(is_our_file_name("52-54-00-12-34-56"));
        assert!(!is_our_file_name("52:54:00:12:34:56"));
        assert!(!is_our_file_name(".52-54-00-12-34-56.tmp"));
        assert!(!is_our_file_name("README"));
    }
}
