//! The SSH half of a rebuild's last steps: log into the freshly installed
//! host with the rebuild's ephemeral key (verifying the host key pinned from
//! the install webhook), run `pvecm add` with the existing node's root
//! password on stdin, remove the ephemeral key from every `authorized_keys`
//! file on the same connection, and prove it is gone by failing a fresh
//! authentication with it.
//!
//! This module owns the SSH conversation and the classification of what can
//! go wrong (retryable vs permanent, [`JoinError::is_retryable`]). It never
//! trusts an unpinned host key, never allocates a PTY, never puts the
//! password or the key on a command line, and never lets a secret leave it:
//! every piece of remote output passes through [`redact`] first. It does not
//! touch the store or the host state: the caller records the
//! [`JoinReport`] or the error.
//!
//! Re-running is safe: a host that already has `/etc/pve/corosync.conf` (the
//! check is configurable) is not joined again, and the key removal succeeds
//! when the key is already gone. One case needs the caller's memory: once
//! the key has been removed, a later run cannot log in at all
//! ([`JoinError::AuthRejected`]); a caller that recorded a successful
//! [`JoinReport`] must not run the join again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};

use crate::join::retry::{self, Attempt, Backoff};
use crate::secrets::{EphemeralKey, SecretString};

/// The default `authorized_keys` files the ephemeral key is removed from.
/// `pvecm add` turns the first into a link to the second (cluster-wide).
pub const DEFAULT_AUTHORIZED_KEYS: [&str; 2] = [
    "/root/.ssh/authorized_keys",
    "/etc/pve/priv/authorized_keys",
];

/// The default "already a cluster member?" check: exit 0 means member.
pub const DEFAULT_MEMBER_CHECK: &str = "test -e /etc/pve/corosync.conf";

/// Per-stream capture limit; the tail is kept.
const OUTPUT_CAP: usize = 64 * 1024;

/// How much output an error message carries.
const ERROR_TAIL_CHARS: usize = 2000;

/// What the join needs. Build with [`JoinParams::new`] and adjust the public
/// fields (tests point the command and paths into a temporary directory).
#[derive(Clone)]
pub struct JoinParams {
    /// The address the host reported at phone-home.
    pub address: IpAddr,
    pub port: u16,
    pub user: String,
    /// The rebuild's ephemeral private key (OpenSSH PEM).
    pub private_key_pem: SecretString,
    /// The ephemeral key's `authorized_keys` line, as put into the answer
    /// file; this is what gets removed.
    pub public_key_line: String,
    /// The host keys from the install webhook (OpenSSH public key lines);
    /// the server must present one of them.
    pub pinned_host_keys: Vec<String>,
    /// `proxmox.existing_node`: the cluster node to join through.
    pub existing_node: String,
    /// `proxmox.join_fingerprint`: SHA-256 of the existing node's API
    /// certificate, colon-separated hex.
    pub join_fingerprint: String,
    /// The existing node's root@pam password.
    pub join_password: SecretString,
    /// The `pvecm` to run (a command name or an absolute path).
    pub pvecm_command: String,
    /// A shell command whose exit status 0 means "already a cluster member",
    /// 1 means "not a member"; anything else is an error.
    pub member_check_command: String,
    /// Files to remove the ephemeral key from (symlinks are followed).
    pub authorized_keys_paths: Vec<String>,
    /// Limit for TCP connect, SSH handshake and authentication together.
    pub connect_timeout: Duration,
    /// Limit for each remote command.
    pub command_timeout: Duration,
    /// Backoff for [`join_with_retry`].
    pub backoff: Backoff,
}

impl JoinParams {
    /// Parameters with the defaults: port 22, user root, `pvecm` from the
    /// PATH, the standard member check and `authorized_keys` paths, 20 s to
    /// connect, 10 min per command.
    pub fn new(
        address: IpAddr,
        key: &EphemeralKey,
        pinned_host_keys: Vec<String>,
        existing_node: impl Into<String>,
        join_fingerprint: impl Into<String>,
        join_password: SecretString,
    ) -> Self {
        Self {
            address,
            port: 22,
            user: "root".to_string(),
            private_key_pem: key.private_openssh().clone(),
            public_key_line: key.public_openssh().to_string(),
            pinned_host_keys,
            existing_node: existing_node.into(),
            join_fingerprint: join_fingerprint.into(),
            join_password,
            pvecm_command: "pvecm".to_string(),
            member_check_command: DEFAULT_MEMBER_CHECK.to_string(),
            authorized_keys_paths: DEFAULT_AUTHORIZED_KEYS.map(String::from).to_vec(),
            connect_timeout: Duration::from_secs(20),
            command_timeout: Duration::from_secs(600),
            backoff: Backoff::default(),
        }
    }

    fn secrets(&self) -> [&str; 2] {
        [self.join_password.expose(), self.private_key_pem.expose()]
    }
}

impl std::fmt::Debug for JoinParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinParams")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("public_key_line", &self.public_key_line)
            .field("existing_node", &self.existing_node)
            .field("join_fingerprint", &self.join_fingerprint)
            .field("pvecm_command", &self.pvecm_command)
            .field("authorized_keys_paths", &self.authorized_keys_paths)
            .finish_non_exhaustive()
    }
}

/// One remote command's result, secrets already redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The command line as sent (it never contains a secret).
    pub command: String,
    pub exit_status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether output beyond the capture limit was dropped (the head).
    pub truncated: bool,
}

impl CommandOutput {
    /// The last `max_chars` characters of stdout and stderr together, for
    /// error messages and history entries.
    pub fn tail(&self, max_chars: usize) -> String {
        let mut both = self.stdout.clone();
        if !self.stderr.is_empty() {
            if !both.is_empty() && !both.ends_with('\n') {
                both.push('\n');
            }
            both.push_str(&self.stderr);
        }
        tail_chars(both.trim_end(), max_chars)
    }
}

/// What a successful join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReport {
    /// `SHA256:…` of the host key the server presented (one of the pinned).
    pub host_key_fingerprint: String,
    /// The member check said the host is already in the cluster, so
    /// `pvecm add` was not run.
    pub already_member: bool,
    /// `pvecm add`'s output, when it ran.
    pub join_output: Option<CommandOutput>,
    /// The key removal script's output (one line per file).
    pub key_removal_output: CommandOutput,
}

impl JoinReport {
    /// One line for the history: "joined" or "already joined".
    pub fn summary(&self) -> &'static str {
        if self.already_member {
            "already joined"
        } else {
            "joined"
        }
    }
}

/// Why a join attempt failed. Display strings carry no secrets.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("invalid join parameters: {0}")]
    InvalidParams(String),
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("timed out connecting to {addr} after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("host key mismatch: {addr} presented {presented}, which is not a pinned key")]
    HostKeyMismatch { addr: String, presented: String },
    #[error(
        "authentication with the ephemeral key was rejected by {addr} (key not installed, or already removed)"
    )]
    AuthRejected { addr: String },
    #[error("ssh connection to {addr} failed: {message}")]
    Transport { addr: String, message: String },
    #[error("ssh protocol error with {addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("{what} timed out after {timeout:?}")]
    CommandTimeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("cluster membership check failed (status {status:?}): {output}")]
    MemberCheckFailed { status: Option<u32>, output: String },
    #[error("pvecm add failed (status {status:?}): {output}")]
    CommandFailed {
        status: Option<u32>,
        output: String,
        /// The full (redacted) output, for the history.
        details: Box<CommandOutput>,
    },
    #[error("removing the ephemeral key failed (status {status:?}): {output}")]
    KeyRemovalFailed { status: Option<u32>, output: String },
    #[error("the ephemeral key is still accepted by {addr} after its removal")]
    KeyStillAccepted { addr: String },
    #[error("cannot verify the key removal on {addr}: {message}")]
    VerifyFailed { addr: String, message: String },
}

impl JoinError {
    /// Whether trying again later can help: connection refused or timed
    /// out, and transport failures before anything ran. Everything that
    /// says "this host or this configuration is wrong" is permanent.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            JoinError::Connect { .. }
                | JoinError::ConnectTimeout { .. }
                | JoinError::Transport { .. }
        )
    }
}

/// Replaces every occurrence of each non-empty secret in `text` with
/// `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret) {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

/// Joins with [`join`], retrying retryable errors with `params.backoff`
/// until `deadline`. `on_attempt` sees every attempt (errors redacted).
pub async fn join_with_retry(
    params: &JoinParams,
    deadline: Instant,
    on_attempt: impl FnMut(&Attempt),
) -> Result<JoinReport, JoinError> {
    retry::retry(
        params.backoff,
        deadline,
        on_attempt,
        JoinError::is_retryable,
        || join(params),
    )
    .await
}

/// One join attempt: connect, check membership, `pvecm add`, remove the
/// key, verify that the key no longer works.
pub async fn join(params: &JoinParams) -> Result<JoinReport, JoinError> {
    let plan = Plan::new(params)?;
    let addr = plan.addr.clone();
    tracing::info!(address = %addr, "ssh join: connecting");
    let (mut session, host_key_fingerprint) = plan.connect().await?;
    if !plan.authenticate(&mut session).await? {
        return Err(JoinError::AuthRejected { addr });
    }
    tracing::info!(address = %addr, host_key = %host_key_fingerprint, "ssh join: authenticated");

    let check = plan
        .run(
            &session,
            &params.member_check_command,
            None,
            "membership check",
        )
        .await?;
    let already_member = match check.exit_status {
        Some(0) => true,
        Some(1) => false,
        status => {
            return Err(JoinError::MemberCheckFailed {
                status,
                output: check.tail(ERROR_TAIL_CHARS),
            });
        }
    };

    let join_output = if already_member {
        tracing::info!(address = %addr, "ssh join: already a cluster member, pvecm add skipped");
        None
    } else {
        tracing::info!(address = %addr, node = %params.existing_node, "ssh join: running pvecm add");
        let mut stdin = format!("{}\n", params.join_password.expose()).into_bytes();
        let result = plan
            .run(&session, &plan.pvecm_command, Some(&stdin), "pvecm add")
            .await;
        stdin.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&stdin);
        let output = result?;
        if output.exit_status != Some(0) {
            tracing::warn!(address = %addr, status = ?output.exit_status, "ssh join: pvecm add failed");
            return Err(JoinError::CommandFailed {
                status: output.exit_status,
                output: output.tail(ERROR_TAIL_CHARS),
                details: Box::new(output),
            });
        }
        tracing::info!(address = %addr, "ssh join: pvecm add succeeded");
        Some(output)
    };

    let removal_stdin = format!("{}\n", plan.key_pattern).into_bytes();
    let key_removal_output = plan
        .run(
            &session,
            &plan.removal_command,
            Some(&removal_stdin),
            "key removal",
        )
        .await?;
    if key_removal_output.exit_status != Some(0) {
        return Err(JoinError::KeyRemovalFailed {
            status: key_removal_output.exit_status,
            output: key_removal_output.tail(ERROR_TAIL_CHARS),
        });
    }
    tracing::info!(address = %addr, "ssh join: ephemeral key removed");
    // Best effort: the session has done its work either way.
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;

    plan.verify_key_rejected().await?;
    tracing::info!(address = %addr, "ssh join: verified the ephemeral key is rejected");

    Ok(JoinReport {
        host_key_fingerprint,
        already_member,
        join_output,
        key_removal_output,
    })
}

/// Everything derived from the parameters before connecting, validated.
struct Plan<'a> {
    params: &'a JoinParams,
    addr: String,
    key: Arc<russh::keys::PrivateKey>,
    pinned: Arc<Vec<PublicKey>>,
    pvecm_command: String,
    removal_command: String,
    /// `<type> <base64>` of the ephemeral key: matched literally, so a line
    /// with options in front or a changed comment goes too.
    key_pattern: String,
}

impl<'a> Plan<'a> {
    fn new(params: &'a JoinParams) -> Result<Self, JoinError> {
        let invalid = |m: &str| JoinError::InvalidParams(m.to_string());
        let key = EphemeralKey::from_private_openssh(params.private_key_pem.expose())
            .map_err(|e| JoinError::InvalidParams(e.to_string()))?;
        let mut fields = params.public_key_line.split_whitespace();
        let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
            return Err(invalid("ephemeral public key line is malformed"));
        };
        let key_pattern = format!("{kind} {blob}");
        let own_public = key.public_openssh();
        if !own_public.starts_with(&format!("{key_pattern} ")) && own_public != key_pattern {
            return Err(invalid(
                "ephemeral public key line does not match the private key",
            ));
        }
        let pinned = params
            .pinned_host_keys
            .iter()
            .map(|line| PublicKey::from_openssh(line.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("a pinned host key is not an openssh public key line"))?;
        if pinned.is_empty() {
            return Err(invalid("no pinned host key"));
        }
        if !is_valid_node_name(&params.existing_node) {
            return Err(invalid("existing node must be a host name or ip address"));
        }
        if !is_valid_fingerprint(&params.join_fingerprint) {
            return Err(invalid(
                "join fingerprint must be 32 colon-separated hex bytes",
            ));
        }
        if params.join_password.expose().contains(['\n', '\r']) {
            return Err(invalid("the join password must be a single line"));
        }
        if params.pvecm_command.is_empty() || params.member_check_command.is_empty() {
            return Err(invalid("empty command"));
        }
        if params.authorized_keys_paths.is_empty()
            || params
                .authorized_keys_paths
                .iter()
                .any(|p| !p.starts_with('/') || p.contains('\n'))
        {
            return Err(invalid("authorized_keys paths must be absolute"));
        }
        let pvecm_command = format!(
            "{} add {} --fingerprint {}",
            sh_quote(&params.pvecm_command),
            sh_quote(&params.existing_node),
            sh_quote(&params.join_fingerprint)
        );
        let mut removal_command =
            format!("sh -c {} remove-ephemeral-key", sh_quote(REMOVE_KEY_SCRIPT));
        for path in &params.authorized_keys_paths {
            removal_command.push(' ');
            removal_command.push_str(&sh_quote(path));
        }
        Ok(Self {
            params,
            addr: socket_display(params.address, params.port),
            key: Arc::new(key.private_key().clone()),
            pinned: Arc::new(pinned),
            pvecm_command,
            removal_command,
            key_pattern,
        })
    }

    fn config(&self) -> Arc<client::Config> {
        // Offer only the algorithms of the pinned keys, so the server
        // presents one we can compare (an RSA-only server has none).
        let mut preferred = russh::Preferred::default();
        let wanted: Vec<_> = preferred
            .key
            .iter()
            .filter(|alg| self.pinned.iter().any(|k| &k.algorithm() == *alg))
            .cloned()
            .collect();
        if !wanted.is_empty() {
            preferred.key = wanted.into();
        }
        Arc::new(client::Config {
            preferred,
            inactivity_timeout: Some(self.params.command_timeout + Duration::from_secs(30)),
            nodelay: true,
            ..Default::default()
        })
    }

    /// TCP connect and SSH handshake (with the host key check), bounded by
    /// the connect timeout.
    async fn connect(&self) -> Result<(Handle<Client>, String), JoinError> {
        let timeout = self.params.connect_timeout;
        let presented = Arc::new(std::sync::Mutex::new(None));
        let client = Client {
            pinned: self.pinned.clone(),
            presented: presented.clone(),
        };
        let config = self.config();
        let attempt = async {
            let stream = tokio::net::TcpStream::connect((self.params.address, self.params.port))
                .await
                .map_err(|e| JoinError::Connect {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                })?;
            client::connect_stream(config, stream, client)
                .await
                .map_err(|e| self.classify(e))
        };
        let handle = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            JoinError::ConnectTimeout {
                addr: self.addr.clone(),
                timeout,
            }
        })??;
        let fingerprint = presented
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_default();
        Ok((handle, fingerprint))
    }

    /// Public key authentication with the ephemeral key; `false` when the
    /// server rejects it.
    async fn authenticate(&self, session: &mut Handle<Client>) -> Result<bool, JoinError> {
        let timeout = self.params.connect_timeout;
        let key = PrivateKeyWithHashAlg::new(self.key.clone(), None);
        let result = tokio::time::timeout(
            timeout,
            session.authenticate_publickey(self.params.user.clone(), key),
        )
        .await
        .map_err(|_| JoinError::ConnectTimeout {
            addr: self.addr.clone(),
            timeout,
        })?;
        result
            .map(|r| r.success())
            .map_err(|e| self.classify(ClientError::Russh(e)))
    }

    /// Runs one command without a PTY, optionally feeding `stdin` and then
    /// closing it, and collects its output (redacted).
    async fn run(
        &self,
        session: &Handle<Client>,
        command: &str,
        stdin: Option<&[u8]>,
        what: &'static str,
    ) -> Result<CommandOutput, JoinError> {
        let timeout = self.params.command_timeout;
        let raw = tokio::time::timeout(timeout, run_raw(session, command, stdin))
            .await
            .map_err(|_| JoinError::CommandTimeout { what, timeout })?
            .map_err(|e| self.classify(ClientError::Russh(e)))?;
        let secrets = self.params.secrets();
        Ok(CommandOutput {
            command: redact(command, &secrets),
            exit_status: raw.exit_status,
            stdout: raw.stdout.finish(&secrets),
            stderr: raw.stderr.finish(&secrets),
            truncated: raw.stdout.truncated || raw.stderr.truncated,
        })
    }

    /// A fresh connection must not be able to log in with the key any more.
    /// Connection trouble here is retried briefly: the join itself is done,
    /// and a full retry could no longer log in.
    async fn verify_key_rejected(&self) -> Result<(), JoinError> {
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1) * attempt).await;
            }
            match self.connect().await {
                Ok((mut session, _)) => {
                    let accepted = self.authenticate(&mut session).await;
                    let _ = session
                        .disconnect(russh::Disconnect::ByApplication, "", "en")
                        .await;
                    match accepted {
                        Ok(false) => return Ok(()),
                        Ok(true) => {
                            return Err(JoinError::KeyStillAccepted {
                                addr: self.addr.clone(),
                            });
                        }
                        Err(e) if e.is_retryable() => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(JoinError::VerifyFailed {
            addr: self.addr.clone(),
            message: last.map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    fn classify(&self, error: ClientError) -> JoinError {
        let addr = self.addr.clone();
        match error {
            ClientError::HostKeyMismatch { presented } => {
                JoinError::HostKeyMismatch { addr, presented }
            }
            ClientError::Russh(e) => {
                let message = redact(&e.to_string(), &self.params.secrets());
                match e {
                    russh::Error::IO(_)
                    | russh::Error::Disconnect
                    | russh::Error::HUP
                    | russh::Error::ConnectionTimeout
                    | russh::Error::KeepaliveTimeout
                    | russh::Error::InactivityTimeout
                    | russh::Error::SendError
                    | russh::Error::RecvError
                    | russh::Error::Elapsed(_) => JoinError::Transport { addr, message },
                    _ => JoinError::Protocol { addr, message },
                }
            }
        }
    }
}

/// Output capture that keeps the last `OUTPUT_CAP` bytes.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > OUTPUT_CAP {
            let excess = self.bytes.len() - OUTPUT_CAP;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    fn finish(&self, secrets: &[&str]) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            // The cut may have split a secret; drop as many leading
            // characters as the longest secret has, so no fragment survives.
            let longest = secrets.iter().map(|s| s.chars().count()).max().unwrap_or(0);
            text = text.chars().skip(longest).collect();
        }
        redact(&text, secrets)
    }
}

struct RawOutput {
    exit_status: Option<u32>,
    stdout: Capture,
    stderr: Capture,
}

async fn run_raw(
    session: &Handle<Client>,
    command: &str,
    stdin: Option<&[u8]>,
) -> Result<RawOutput, russh::Error> {
    let mut channel = session.channel_open_session().await?;
    channel.exec(true, command).await?;
    if let Some(data) = stdin {
        channel.data(data).await?;
    }
    channel.eof().await?;
    let mut out = RawOutput {
        exit_status: None,
        stdout: Capture::default(),
        stderr: Capture::default(),
    };
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.stdout.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                out.stderr
                    .push(format!("killed by signal {signal_name:?}\n").as_bytes());
            }
            ChannelMsg::Failure => {
                out.stderr.push(b"the server refused to run the command\n");
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The POSIX sh that removes the key: reads the pattern from stdin (never
/// argv, so it does not show in `ps`), and for each file argument resolves
/// symlinks, writes the file without the matching lines into a temporary
/// file next to it, copies the mode and renames it over the original. A
/// missing file or a file without the key is fine. Exit status 0 only when
/// the key is in none of the files afterwards.
const REMOVE_KEY_SCRIPT: &str = r#"umask 077
IFS= read -r key || [ -n "$key" ] || { echo "no key on stdin" >&2; exit 2; }
[ -n "$key" ] || { echo "empty key on stdin" >&2; exit 2; }
rc=0
for f in "$@"; do
  if [ ! -e "$f" ]; then echo "absent: $f"; continue; fi
  t=$(readlink -f -- "$f") || { echo "cannot resolve: $f" >&2; rc=1; continue; }
  grep -qF -- "$key" "$t"
  s=$?
  if [ "$s" -eq 1 ]; then echo "not present: $f"; continue; fi
  if [ "$s" -ne 0 ]; then echo "cannot read: $f" >&2; rc=1; continue; fi
  tmp="$t.provisioning-tmp.$$"
  grep -vF -- "$key" "$t" > "$tmp"
  s=$?
  if [ "$s" -gt 1 ]; then rm -f -- "$tmp"; echo "cannot rewrite: $f" >&2; rc=1; continue; fi
  m=$(stat -c %a -- "$t" 2>/dev/null) && chmod "$m" "$tmp" 2>/dev/null
  if ! mv -f -- "$tmp" "$t"; then rm -f -- "$tmp"; echo "cannot replace: $f" >&2; rc=1; continue; fi
  grep -qF -- "$key" "$t"
  s=$?
  if [ "$s" -ne 1 ]; then echo "still present or unreadable: $f" >&2; rc=1; continue; fi
  echo "removed: $f"
done
exit "$rc"
"#;

/// Single-quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn socket_display(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn is_valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

fn is_valid_fingerprint(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 32
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn tail_chars(s: &str, max_chars: usize) -> String {
    let count = s.chars().count();
    if count <= max_chars {
        s.to_string()
    } else {
        let mut t = String::from("…");
        t.extend(s.chars().skip(count - max_chars));
        t
    }
}

/// The russh client handler: accepts exactly the pinned host keys.
struct Client {
    pinned: Arc<Vec<PublicKey>>,
    presented: Arc<std::sync::Mutex<Option<String>>>,
}

#[derive(Debug)]
enum ClientError {
    Russh(russh::Error),
    HostKeyMismatch { presented: String },
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Russh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                return Err(ClientError::HostKeyMismatch {
                    presented: format!(
                        "a certificate ({})",
                        cert.public_key().fingerprint(HashAlg::Sha256)
                    ),
                });
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if self.pinned.iter().any(|p| p.key_data() == key.key_data()) {
            if let Ok(mut slot) = self.presented.lock() {
                *slot = Some(fingerprint);
            }
            Ok(true)
        } else {
            Err(ClientError::HostKeyMismatch {
                presented: fingerprint,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_every_secret() {
        assert_eq!(
            redact("pw hunter2 and hunter2", &["hunter2", ""]),
            "pw <redacted> and <redacted>"
        );
        assert_eq!(redact("nothing", &["x1"]), "nothing");
    }

    #[test]
    fn capture_keeps_the_tail_and_drops_split_secrets() {
        let mut c = Capture::default();
        c.push(&vec![b'a'; OUTPUT_CAP - 3]);
        c.push(b"secret-tail");
        assert!(c.truncated);
        let text = c.finish(&["secret-tail"]);
        assert!(!text.contains("secret"), "{}", &text[text.len() - 20..]);
        assert!(text.len() <= OUTPUT_CAP);
    }

    #[test]
    fn quoting_and_validation() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert!(is_valid_node_name("pve-01.lan"));
        assert!(is_valid_node_name("10.0.0.1"));
        assert!(!is_valid_node_name("a;rm -rf /"));
        assert!(!is_valid_node_name("-x"));
        let fp = vec!["AB"; 32].join(":");
        assert!(is_valid_fingerprint(&fp));
        assert!(!is_valid_fingerprint("AB:CD"));
        assert!(!is_valid_fingerprint(&vec!["ZZ"; 32].join(":")));
    }

    #[test]
    fn removal_script_passes_shellcheck() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remove-key.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{REMOVE_KEY_SCRIPT}")).unwrap();
        let out = std::process::Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(&path)
            .output()
            .expect("shellcheck is missing: install Debian's shellcheck");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// The removal script run locally with `sh`, as sshd would run it.
    fn run_removal(key: &str, files: &[&std::path::Path]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(REMOVE_KEY_SCRIPT)
            .arg("remove-ephemeral-key")
            .args(files)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{key}").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    #[test]
    fn removal_script_follows_links_keeps_mode_and_other_lines() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cluster_keys");
        let link = dir.path().join("node_keys");
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOurKey";
        std::fs::write(
            &target,
            format!(
                "ssh-rsa AAAAB3other a@b\n{key} provisioning:h:rebuild-1\n\
                 from=\"10.0.0.1\" {key} edited-comment\nssh-ed25519 AAAAlast c@d\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let missing = dir.path().join("missing");

        let out = run_removal(key, &[&link, &target, &missing]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("removed:") && stdout.contains("not present:"));
        assert!(stdout.contains("absent:"), "{stdout}");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "ssh-rsa AAAAB3other a@b\nssh-ed25519 AAAAlast c@d\n"
        );
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Running it again is harmless.
        let again = run_removal(key, &[&link, &target]);
        assert!(again.status.success());
        // An empty key must not match (and wipe) every line.
        let empty = run_removal("", &[&target]);
        assert!(!empty.status.success());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "ssh-rsa AAAAB3other a@b\nssh-ed25519 AAAAlast c@d\n"
        );
    }

    #[test]
    fn retryable_classification() {
        let addr = "a".to_string();
        assert!(
            JoinError::Connect {
                addr: addr.clone(),
                message: String::new()
            }
            .is_retryable()
        );
        assert!(!JoinError::AuthRejected { addr: addr.clone() }.is_retryable());
        assert!(
            !JoinError::HostKeyMismatch {
                addr,
                presented: String::new()
            }
            .is_retryable()
        );
    }
}
