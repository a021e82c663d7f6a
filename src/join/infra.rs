//! The client for the external Infrastructure service: registers a host that
//! just joined the cluster, idempotently, retried with backoff until the
//! state's deadline.
//!
//! It owns the HTTP contract below and the classification of responses into
//! success, retryable and permanent failures. It never logs or returns the
//! bearer token, never follows redirects to another place with it (redirects
//! are off), and does not touch the store or the host state: the caller
//! records each [`Attempt`](crate::join::retry::Attempt) and the outcome.
//!
//! # HTTP contract
//!
//! One request per registration attempt:
//!
//! ```text
//! PUT {base_url}/api/v1/servers/{hostname}
//! Authorization: Bearer <token from infrastructure.token_file>   (omitted when no token file is set)
//! Content-Type: application/json
//! Accept: application/json
//!
//! {
//!   "hostname": "pve-01",
//!   "management_ip": "192.0.2.11",
//!   "mac": "52:54:00:12:34:56",
//!   "hardware_id": "4c4c4544-0042-3510-8052-b4c04f4d4e31",
//!   "server_type_id": 7
//! }
//! ```
//!
//! `hostname` in the path and the body are the same; `server_type_id` is the
//! value from `infrastructure.server_type_map` for the host's server type,
//! sent as given (a JSON number or string). `PUT` is an upsert: sending the
//! same registration twice must be harmless.
//!
//! How we read the answer:
//!
//! | response                                      | meaning                      |
//! |-----------------------------------------------|------------------------------|
//! | 200, 201, 204                                 | registered                   |
//! | 409, or any 4xx whose body says "already exists" / "already registered" | already registered (success) |
//! | 408, 429, any 5xx                             | retry with backoff           |
//! | timeout, connection refused/reset, DNS error  | retry with backoff           |
//! | any other status                              | permanent failure: status and the first 200 characters of the body are reported |
//!
//! An empty `infrastructure.base_url` means "no Infrastructure service":
//! the caller skips registration.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::join::retry::{self, Attempt, Backoff};
use crate::secrets::SecretString;

/// How much of a response body an error quotes.
const BODY_EXCERPT_CHARS: usize = 200;
/// Response bodies are read up to this size, no further.
const BODY_READ_LIMIT: usize = 16 * 1024;

/// The Infrastructure id of a server type, as configured: a number or a
/// string, sent as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerTypeId {
    Number(u64),
    Text(String),
}

impl From<String> for ServerTypeId {
    fn from(value: String) -> Self {
        ServerTypeId::Text(value)
    }
}

/// What we tell Infrastructure about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub hostname: String,
    pub management_ip: std::net::IpAddr,
    /// `aa:bb:cc:dd:ee:ff`, lowercase.
    pub mac: String,
    /// The hardware id the host reported at phone-home (DMI UUID).
    pub hardware_id: String,
    pub server_type_id: ServerTypeId,
}

/// A successful registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// Infrastructure accepted it now (HTTP status).
    Created { status: u16 },
    /// Infrastructure already knew the host (409 or an "exists" body).
    AlreadyRegistered { status: u16 },
}

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("invalid infrastructure base url: {0}")]
    InvalidBaseUrl(String),
    #[error("invalid host name for registration: {0:?}")]
    InvalidHostname(String),
    #[error("cannot build the http client: {0}")]
    Client(String),
    #[error("infrastructure request timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot reach infrastructure: {0}")]
    Unreachable(String),
    #[error("infrastructure answered {status} (will retry): {body}")]
    ServerError { status: u16, body: String },
    #[error("infrastructure rejected the registration with {status}: {body}")]
    Rejected { status: u16, body: String },
}

impl InfraError {
    /// Timeouts, connection failures, 408/429 and 5xx are worth retrying;
    /// everything else will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            InfraError::Timeout(_) | InfraError::Unreachable(_) | InfraError::ServerError { .. }
        )
    }
}

/// A client for one Infrastructure service.
pub struct InfraClient {
    base_url: String,
    token: Option<SecretString>,
    timeout: Duration,
    http: reqwest::Client,
    backoff: Backoff,
}

impl std::fmt::Debug for InfraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfraClient")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl InfraClient {
    /// `base_url` is `http(s)://host[:port][/prefix]`; `timeout` bounds each
    /// request (connect, send, answer).
    pub fn new(
        base_url: &str,
        token: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, InfraError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|e| InfraError::InvalidBaseUrl(format!("{base_url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(InfraError::InvalidBaseUrl(format!(
                "{base_url}: http or https url with a host expected"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(InfraError::InvalidBaseUrl(format!(
                "{base_url}: no query or fragment allowed"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("provisioning/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| InfraError::Client(e.to_string()))?;
        Ok(Self {
            base_url,
            token,
            timeout,
            http,
            backoff: Backoff::default(),
        })
    }

    /// Replaces the retry backoff (default: 1 s doubling up to 30 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The URL a registration of `hostname` goes to.
    pub fn server_url(&self, hostname: &str) -> Result<String, InfraError> {
        if !is_valid_hostname(hostname) {
            return Err(InfraError::InvalidHostname(hostname.to_string()));
        }
        Ok(format!("{}/api/v1/servers/{hostname}", self.base_url))
    }

    /// One registration attempt.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, InfraError> {
        let url = self.server_url(&registration.hostname)?;
        let mut request = self
            .http
            .put(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(registration);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        if matches!(status, 200 | 201 | 204) {
            tracing::info!(host = %registration.hostname, status, "registered with infrastructure");
            return Ok(Registered::Created { status });
        }
        let body = read_body_excerpt(response).await;
        let already = status == 409
            || ((400..500).contains(&status) && {
                let lower = body.to_ascii_lowercase();
                lower.contains("already exists") || lower.contains("already registered")
            });
        if already {
            tracing::info!(host = %registration.hostname, status, "already registered with infrastructure");
            return Ok(Registered::AlreadyRegistered { status });
        }
        let body = self.redact(&body);
        if status == 408 || status == 429 || (500..600).contains(&status) {
            Err(InfraError::ServerError { status, body })
        } else {
            Err(InfraError::Rejected { status, body })
        }
    }

    /// Registers with retries: retryable errors are retried with backoff and
    /// jitter until `deadline`; `on_attempt` sees every attempt.
    pub async fn register_with_retry(
        &self,
        registration: &Registration,
        deadline: Instant,
        on_attempt: impl FnMut(&Attempt),
    ) -> Result<Registered, InfraError> {
        retry::retry(
            self.backoff,
            deadline,
            on_attempt,
            InfraError::is_retryable,
            || self.register(registration),
        )
        .await
    }

    fn transport_error(&self, e: reqwest::Error) -> InfraError {
        if e.is_timeout() {
            return InfraError::Timeout(self.timeout);
        }
        // reqwest's messages name the URL, never headers; strip the URL
        // anyway so nothing request-specific leaks, and walk the source
        // chain for the useful part ("connection refused").
        let is_builder = e.is_builder();
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        let message = self.redact(&message);
        if is_builder {
            InfraError::Client(message)
        } else {
            InfraError::Unreachable(message)
        }
    }

    fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(token) => crate::join::ssh::redact(text, &[token.expose()]),
            None => text.to_string(),
        }
    }
}

/// The first bytes of a response body as text, shortened for messages.
async fn read_body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(BODY_READ_LIMIT);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let mut excerpt: String = text
        .chars()
        .take(BODY_EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > BODY_EXCERPT_CHARS {
        excerpt.push('…');
    }
    excerpt
}

fn is_valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_building_and_validation() {
        let c = InfraClient::new(
            "http://infra.example:8080/prefix/",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.server_url("pve-01").unwrap(),
            "http://infra.example:8080/prefix/api/v1/servers/pve-01"
        );
        assert!(c.server_url("../etc").is_err());
        assert!(c.server_url("a/b").is_err());
        assert!(InfraClient::new("ftp://x", None, Duration::from_secs(1)).is_err());
        assert!(InfraClient::new("not a url", None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let c = InfraClient::new(
            "http://x",
            Some(SecretString::new("tok-123")),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("tok-123"));
    }

    #[test]
    fn registration_json_shape() {
        let r = Registration {
            hostname: "pve-01".into(),
            management_ip: "192.0.2.11".parse().unwrap(),
            mac: "52:54:00:12:34:56".into(),
            hardware_id: "uuid".into(),
            server_type_id: ServerTypeId::Number(7),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "hostname": "pve-01",
                "management_ip": "192.0.2.11",
                "mac": "52:54:00:12:34:56",
                "hardware_id": "uuid",
                "server_type_id": 7
            })
        );
    }
}
