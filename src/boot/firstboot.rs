//! The first-boot script: a POSIX sh script (`templates/first-boot.sh`) that
//! the Proxmox installer downloads during installation and runs once on the
//! installed system, reporting its IP address and hardware id to the daemon.
//!
//! # URL contract
//!
//! The installer cannot send headers for its webhook or first-boot download,
//! so those two URLs carry the rebuild's token in the *path* (never in a query
//! string; the HTTP layer redacts path tokens in its logs):
//!
//! - `GET  <public_url>/api/hosts/<name>/first-boot-script/<token>` serves this script;
//! - `POST <public_url>/api/hosts/<name>/installed/<token>` is the post-installation webhook;
//! - `POST <public_url>/api/hosts/<name>/phone-home` is what the script calls, with
//!   `Authorization: Bearer <token>` and the JSON body `{"ip": "…", "hardware_id": "…"}`
//!   (`hardware_id` is the lower-case DMI system UUID, else `/etc/machine-id`).
//!
//! The script contains the token (it must present it); this module never logs
//! it and the rendered script must only be served on the token-checked path.

use crate::decl::HostName;
use crate::templates::{TemplateError, Templates};
use serde::Serialize;
use std::fmt;

/// How long the script keeps retrying phone-home by default.
pub const DEFAULT_DEADLINE_SECS: u32 = 600;

/// What the first-boot script needs.
#[derive(Clone)]
pub struct FirstBootParams {
    /// `server.public_url`, e.g. `http://10.0.0.1:8080` (a trailing `/` is ignored).
    pub public_url: String,
    pub host: HostName,
    /// This rebuild's token, sent as a bearer token.
    pub token: String,
    /// Total time the script keeps retrying, in seconds.
    pub deadline_secs: u32,
}

impl fmt::Debug for FirstBootParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstBootParams")
            .field("public_url", &self.public_url)
            .field("host", &self.host)
            .field("token", &"<redacted>")
            .field("deadline_secs", &self.deadline_secs)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirstBootError {
    #[error("public URL must be http:// or https:// with a host")]
    PublicUrl,
    #[error("token must be 1-256 characters of A-Z a-z 0-9 - _ . ~")]
    Token,
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// `<public_url>/api/hosts/<name>/phone-home`.
pub fn phone_home_url(public_url: &str, host: &HostName) -> String {
    format!(
        "{}/api/hosts/{host}/phone-home",
        public_url.trim_end_matches('/')
    )
}

/// `<public_url>/api/hosts/<name>/first-boot-script/<token>` (token in the path).
pub fn first_boot_script_url(public_url: &str, host: &HostName, token: &str) -> String {
    format!(
        "{}/api/hosts/{host}/first-boot-script/{token}",
        public_url.trim_end_matches('/')
    )
}

/// `<public_url>/api/hosts/<name>/installed/<token>` (token in the path).
pub fn installed_webhook_url(public_url: &str, host: &HostName, token: &str) -> String {
    format!(
        "{}/api/hosts/{host}/installed/{token}",
        public_url.trim_end_matches('/')
    )
}

/// A token is put into URL paths and scripts: only unreserved URL characters.
pub fn check_token(token: &str) -> Result<(), FirstBootError> {
    let ok = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(FirstBootError::Token)
    }
}

/// The host part of an http(s) URL (brackets stripped from IPv6 literals).
fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    if host.is_empty() { None } else { Some(host) }
}

/// Renders the first-boot script.
pub fn render(t: &Templates, p: &FirstBootParams) -> Result<String, FirstBootError> {
    let public_url = p.public_url.trim_end_matches('/');
    let server_host = url_host(public_url).ok_or(FirstBootError::PublicUrl)?;
    check_token(&p.token)?;
    #[derive(Serialize)]
    struct Ctx<'a> {
        host: &'a str,
        phone_home_url: String,
        server_host: &'a str,
        token: &'a str,
        deadline_secs: u32,
    }
    let ctx = Ctx {
        host: p.host.as_str(),
        phone_home_url: phone_home_url(public_url, &p.host),
        server_host,
        token: &p.token,
        deadline_secs: p.deadline_secs,
    };
    Ok(t.render("first-boot.sh", ctx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_cases() {
        assert_eq!(url_host("http://10.0.0.1:8080"), Some("10.0.0.1"));
        assert_eq!(url_host("https://prov.lan/x"), Some("prov.lan"));
        assert_eq!(url_host("http://[fd00::1]:80/"), Some("fd00::1"));
        assert_eq!(url_host("http://u@h:1"), Some("h"));
        assert_eq!(url_host("http://"), None);
        assert_eq!(url_host("ftp://h"), None);
    }

    #[test]
    fn urls() {
        let h = HostName::parse("pve-01").unwrap();
        assert_eq!(
            installed_webhook_url("http://p:8080/", &h, "tok"),
            "http://p:8080/api/hosts/pve-01/installed/tok"
        );
        assert_eq!(
            first_boot_script_url("http://p:8080", &h, "tok"),
            "http://p:8080/api/hosts/pve-01/first-boot-script/tok"
        );
        assert_eq!(
            phone_home_url("http://p:8080", &h),
            "http://p:8080/api/hosts/pve-01/phone-home"
        );
    }

    #[test]
    fn token_rules_and_redaction() {
        assert!(check_token("AbC-123_x.y~z").is_ok());
        for bad in ["", "a b", "a/b", "a?b", "'", &"x".repeat(257)] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        let p = FirstBootParams {
            public_url: "http://p".into(),
            host: HostName::parse("h").unwrap(),
            token: "s3cret".into(),
            deadline_secs: 1,
        };
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
