//! `provisioning status`: the terminal client of the read-only API.
//!
//! It prints the fleet as a table (like `kubectl get`), one host in detail
//! with its history, the raw API JSON, or follows `/events`. The formatting
//! functions are pure (they take the decoded API data and "now") so they are
//! golden-tested; the I/O around them is small. It only ever reads: it sends
//! GET requests and nothing else.
//!
//! Exit status: 0 all good, 1 a shown host is `failed`, 2 the daemon cannot
//! be reached, 3 any other problem (unknown host, unexpected answer).

use crate::state::{EventKind, HostState};
use serde::Deserialize;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// The default daemon address (overridden by `--url` / `PROVISIONING_URL`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The exit codes, as documented above.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED_HOST: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 2;
pub const EXIT_OTHER: u8 = 3;

/// Arguments of `provisioning status`.
#[derive(Clone, Debug)]
pub struct StatusArgs {
    pub url: String,
    pub json: bool,
    pub watch: bool,
    pub host: Option<String>,
}

/// One host as `/api/hosts` sends it (the fields the client uses).
#[derive(Clone, Debug, Deserialize)]
pub struct ApiHost {
    pub name: String,
    pub mac: String,
    #[serde(default)]
    pub server_type: String,
    pub state: HostState,
    #[serde(default)]
    pub rebuild: u64,
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default)]
    pub since_ms: i64,
    #[serde(default)]
    pub operation: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub line: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ApiTransition {
    pub host: String,
    #[serde(default)]
    pub operation: Option<i64>,
    pub at_ms: i64,
    pub from: HostState,
    pub to: HostState,
    pub event: EventKind,
    #[serde(default)]
    pub cause: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ApiNote {
    pub host: String,
    #[serde(default)]
    pub operation: Option<i64>,
    pub at_ms: i64,
    pub kind: String,
    pub message: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ApiOperation {
    pub id: i64,
    pub generation: u64,
    pub started_ms: i64,
    #[serde(default)]
    pub ended_ms: Option<i64>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `/api/hosts/{name}`.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiDetail {
    #[serde(flatten)]
    pub host: ApiHost,
    #[serde(default)]
    pub history: Vec<ApiTransition>,
    #[serde(default)]
    pub operations: Vec<ApiOperation>,
    #[serde(default)]
    pub notes: Vec<ApiNote>,
}

/// A compact age: `45s`, `5m`, `2h`, `3d`; `-` when unknown.
pub fn age(since_ms: i64, now_ms: i64) -> String {
    if since_ms <= 0 {
        return "-".to_string();
    }
    let s = (now_ms - since_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `3` when the declared rebuild was acted on, `3→4` while it is pending.
pub fn rebuild_cell(observed: u64, desired: u64) -> String {
    if observed == desired {
        observed.to_string()
    } else {
        format!("{observed}→{desired}")
    }
}

/// RFC 3339 in UTC, seconds precision.
pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn truncate(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The error cell: the rebuild's failure reason, else a declaration problem.
fn error_cell(h: &ApiHost) -> String {
    if h.state == HostState::Failed
        && let Some(e) = &h.last_error
    {
        return truncate(e, 70);
    }
    match h.errors.first() {
        Some(e) => truncate(&format!("declaration: {e}"), 70),
        None => "-".to_string(),
    }
}

/// Renders rows as aligned columns separated by three spaces; the last
/// column is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The fleet table: NAME STATE SINCE REBUILD ERROR.
pub fn format_table(hosts: &[ApiHost], now_ms: i64) -> String {
    if hosts.is_empty() {
        return "no hosts declared\n".to_string();
    }
    let mut rows = vec![
        ["NAME", "STATE", "SINCE", "REBUILD", "ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for h in hosts {
        rows.push(vec![
            h.name.clone(),
            h.state.to_string(),
            age(h.since_ms, now_ms),
            rebuild_cell(h.observed_generation, h.rebuild),
            error_cell(h),
        ]);
    }
    columns(&rows)
}

/// One line of the history: a transition or a note, in time order.
enum Entry<'a> {
    Transition(&'a ApiTransition),
    Note(&'a ApiNote),
}

impl Entry<'_> {
    fn at(&self) -> i64 {
        match self {
            Entry::Transition(t) => t.at_ms,
            Entry::Note(n) => n.at_ms,
        }
    }
}

/// One host in detail, with its history (transitions and notes, oldest
/// first).
pub fn format_detail(d: &ApiDetail, now_ms: i64) -> String {
    let h = &d.host;
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<13}{v}", format!("{k}:"));
    };
    field(&mut out, "Name", &h.name);
    field(&mut out, "MAC", &h.mac);
    field(&mut out, "Server type", &h.server_type);
    field(&mut out, "Declared in", &format!("{}:{}", h.file, h.line));
    let since = if h.since_ms > 0 {
        format!(
            " since {} ({} ago)",
            timestamp(h.since_ms),
            age(h.since_ms, now_ms)
        )
    } else {
        String::new()
    };
    field(&mut out, "State", &format!("{}{since}", h.state));
    let pending = if h.rebuild != h.observed_generation {
        format!(" (declared {}, not acted on yet)", h.rebuild)
    } else {
        String::new()
    };
    field(
        &mut out,
        "Rebuild",
        &format!("{}{pending}", h.observed_generation),
    );
    if let Some(op) = d.operations.first() {
        let status = match (&op.outcome, op.ended_ms) {
            (Some(o), Some(end)) => format!("{o} at {}", timestamp(end)),
            (Some(o), None) => o.clone(),
            (None, _) => "running".to_string(),
        };
        let reason = op
            .reason
            .as_deref()
            .map(|r| format!(": {}", truncate(r, 100)))
            .unwrap_or_default();
        field(
            &mut out,
            "Operation",
            &format!(
                "#{} (rebuild {}), started {}, {status}{reason}",
                op.id,
                op.generation,
                timestamp(op.started_ms)
            ),
        );
    }
    if let Some(e) = &h.last_error {
        field(&mut out, "Last error", &truncate(e, 200));
    }
    for e in &h.errors {
        field(&mut out, "Declaration", &truncate(e, 200));
    }

    let mut entries: Vec<Entry> = d
        .history
        .iter()
        .map(Entry::Transition)
        .chain(d.notes.iter().map(Entry::Note))
        .collect();
    entries.sort_by_key(Entry::at);
    out.push_str("\nHistory:\n");
    if entries.is_empty() {
        out.push_str("  (none)\n");
        return out;
    }
    let mut rows = vec![["TIME", "WHAT", "DETAIL"].map(String::from).to_vec()];
    for e in entries {
        match e {
            Entry::Transition(t) => rows.push(vec![
                timestamp(t.at_ms),
                format!("{} → {}", t.from, t.to),
                if t.cause.is_empty() {
                    t.event.as_str().to_string()
                } else {
                    format!("{}: {}", t.event.as_str(), truncate(&t.cause, 100))
                },
            ]),
            Entry::Note(n) => rows.push(vec![
                timestamp(n.at_ms),
                format!("note {}", n.kind),
                truncate(&n.message, 100),
            ]),
        }
    }
    for line in columns(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// One line for `--watch` when a transition arrives.
pub fn format_watch_line(t: &ApiTransition) -> String {
    let cause = if t.cause.is_empty() {
        String::new()
    } else {
        format!("  {}", truncate(&t.cause, 100))
    };
    format!(
        "{}  {}  {} → {}  ({}){cause}",
        timestamp(t.at_ms),
        t.host,
        t.from,
        t.to,
        t.event.as_str()
    )
}

/// Whether any of the hosts is failed (the exit status says so).
pub fn any_failed<'a>(hosts: impl IntoIterator<Item = &'a ApiHost>) -> bool {
    hosts.into_iter().any(|h| h.state == HostState::Failed)
}

/// An incremental parser of a `text/event-stream` body: feed it chunks,
/// get complete `(event, data)` pairs.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &str) -> Vec<(String, String)> {
        self.buf.push_str(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let event = if self.event.is_empty() {
                        "message".to_string()
                    } else {
                        std::mem::take(&mut self.event)
                    };
                    out.push((event, self.data.join("\n")));
                }
                self.event.clear();
                self.data.clear();
            } else if line.starts_with(':') {
                // A comment (keep-alive).
            } else {
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "event" => self.event = value.to_string(),
                    "data" => self.data.push(value.to_string()),
                    _ => {}
                }
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("cannot reach the provisioning daemon at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("host {0:?} is not declared")]
    NoSuchHost(String),
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("unexpected answer from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => EXIT_OTHER,
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Result<Client, reqwest::Error> {
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        Ok(resp)
    }

    async fn text(&self, path: &str, host: Option<&str>) -> Result<String, ClientError> {
        let resp = self.get(path).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND
            && let Some(h) = host
        {
            return Err(ClientError::NoSuchHost(h.to_string()));
        }
        if !status.is_success() {
            return Err(ClientError::Status {
                url: format!("{}{path}", self.base),
                status,
            });
        }
        resp.text().await.map_err(|source| ClientError::Decode {
            url: format!("{}{path}", self.base),
            source,
        })
    }
}

fn host_path(host: &str) -> String {
    // Host names are DNS labels; anything else is refused by the daemon,
    // but never let it form another path.
    let safe: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("/api/hosts/{safe}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn decode<T: serde::de::DeserializeOwned>(text: &str, url: &str) -> Result<T, anyhow::Error> {
    serde_json::from_str(text).map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}"))
}

/// Runs `provisioning status` and returns the exit code. Messages go to
/// stderr, results to stdout.
pub fn run_status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(status(&args))?;
    Ok(ExitCode::from(code))
}

async fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.url)?;
    let shown = match show_once(&client, args).await {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<ClientError>()
                .map(ClientError::exit_code)
                .unwrap_or(EXIT_OTHER);
            eprintln!("provisioning status: {e:#}");
            return Ok(code);
        }
    };
    if !args.watch {
        return Ok(shown);
    }
    watch(&client, args).await
}

/// Prints the table, the detail or the JSON once; returns the exit code.
async fn show_once(client: &Client, args: &StatusArgs) -> anyhow::Result<u8> {
    let now = now_ms();
    match &args.host {
        None => {
            let text = client.text("/api/hosts", None).await?;
            if args.json {
                println!("{text}");
            }
            let hosts: Vec<ApiHost> = decode(&text, "/api/hosts")?;
            if !args.json {
                print!("{}", format_table(&hosts, now));
            }
            Ok(if any_failed(&hosts) {
                EXIT_FAILED_HOST
            } else {
                EXIT_OK
            })
        }
        Some(name) => {
            let path = host_path(name);
            let text = client.text(&path, Some(name)).await?;
            if args.json {
                println!("{text}");
            }
            let detail: ApiDetail = decode(&text, &path)?;
            if !args.json {
                print!("{}", format_detail(&detail, now));
            }
            Ok(if detail.host.state == HostState::Failed {
                EXIT_FAILED_HOST
            } else {
                EXIT_OK
            })
        }
    }
}

/// Follows `/events` forever, printing one line per transition (of the
/// chosen host, if any), reconnecting with backoff.
async fn watch(client: &Client, args: &StatusArgs) -> anyhow::Result<u8> {
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(500);
    loop {
        let resp = match client.get("/events").await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                eprintln!("provisioning status: /events answered {}", r.status());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Err(e) => {
                eprintln!("provisioning status: {e}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let mut parser = SseParser::default();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            for (event, data) in parser.feed(&String::from_utf8_lossy(&chunk)) {
                match event.as_str() {
                    "transition" => {
                        let Ok(t) = serde_json::from_str::<ApiTransition>(&data) else {
                            continue;
                        };
                        if args.host.as_deref().is_none_or(|h| h == t.host) {
                            println!("{}", format_watch_line(&t));
                        }
                    }
                    // The client fell behind: show where things stand.
                    "resync" => {
                        let _ = show_once(client, args).await;
                    }
                    _ => {}
                }
            }
        }
        eprintln!("provisioning status: event stream closed; reconnecting");
        tokio::time::sleep(backoff).await;
        // Transitions may have been missed while disconnected.
        if show_once(client, args).await.is_err() {
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_compact() {
        let now = 1_000_000_000;
        assert_eq!(age(now - 45_000, now), "45s");
        assert_eq!(age(now - 5 * 60_000 - 1, now), "5m");
        assert_eq!(age(now - 2 * 3_600_000, now), "2h");
        assert_eq!(age(now - 3 * 86_400_000, now), "3d");
        assert_eq!(age(0, now), "-");
    }

    #[test]
    fn sse_parser_handles_split_chunks() {
        let mut p = SseParser::default();
        assert!(p.feed("event: transition\nda").is_empty());
        let got = p.feed("ta: {\"a\":1}\n\n: keep-alive\n\nevent: resync\ndata: {}\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ("transition".to_string(), "{\"a\":1}".to_string()),
                ("resync".to_string(), "{}".to_string())
            ]
        );
    }
}
