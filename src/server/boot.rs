//! Machine-facing boot-flow endpoints: iPXE scripts, boot assets, the
//! answer file and the installer/first-boot callbacks.
//!
//! Every state change goes through the store's state machine
//! (`Store::apply`, `Store::serve_answer`); each endpoint is accepted only
//! from the host expected to call it, in the state where it is expected.
//! Refusals change nothing and say why (in the response and our log).
//! Tokens travel in paths (`…/installed/{token}`) or as bearer tokens and
//! are never logged: the request span prints a redacted path.

use super::{AppState, SharedState};
use crate::boot::{answer, firstboot, ipxe, sysinfo};
use crate::decl::HostName;
use crate::mac::MacAddr;
use crate::secrets::{Token, verify_token};
use crate::state::{EventKind, HostState};
use crate::store::{OperationRecord, OperationUpdate};
use crate::templates::Templates;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::path::PathBuf;

/// What the boot endpoints need beyond the store and the snapshot; built
/// once at start (and on SIGHUP).
pub struct BootContext {
    pub templates: Templates,
    /// The local-boot scripts, rendered once: most boot requests get one.
    pub local_boot: LocalBootScripts,
    /// The gzip'd pxe-init CPIO, built in memory at start.
    pub overlay: Vec<u8>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub iso: Option<PathBuf>,
    pub iso_sha256: Option<String>,
    pub extra_kernel_args: Vec<String>,
    pub root_password_hash: Option<answer::PasswordHash>,
    pub answer_defaults: answer::AnswerDefaults,
    /// Proxmox 9.2 `--answer-auth-token`: required as a bearer token when set.
    pub answer_token: Option<crate::secrets::SecretString>,
    pub discover_unknown: bool,
}

/// The local-boot script for each firmware, rendered when the templates
/// are loaded. It depends on nothing but the template and the firmware, and
/// it is the answer to almost every boot request (unknown and unarmed
/// machines), so a boot storm should not render it thousands of times a
/// second. A template that fails to render is rendered (and its error
/// reported) per request, as before.
pub struct LocalBootScripts {
    bios: Option<String>,
    uefi: Option<String>,
    unknown: Option<String>,
}

impl LocalBootScripts {
    pub fn render(t: &Templates) -> LocalBootScripts {
        let r = |f| ipxe::local_boot_script(t, f).ok();
        LocalBootScripts {
            bios: r(ipxe::Firmware::Bios),
            uefi: r(ipxe::Firmware::Uefi),
            unknown: r(ipxe::Firmware::Unknown),
        }
    }

    fn get(&self, firmware: ipxe::Firmware) -> Option<&String> {
        match firmware {
            ipxe::Firmware::Bios => self.bios.as_ref(),
            ipxe::Firmware::Uefi => self.uefi.as_ref(),
            ipxe::Firmware::Unknown => self.unknown.as_ref(),
        }
    }
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/ipxe", get(entry))
        .route("/ipxe/{mac}", get(ipxe_script))
        .route("/boot/vmlinuz", get(kernel))
        .route("/boot/initrd.img", get(initrd))
        .route("/boot/overlay.cpio.gz", get(overlay))
        .route("/boot/proxmox.iso", get(iso))
        .route("/api/boot/answer", post(answer_file))
        .route("/api/hosts/{name}/installed/{token}", post(installed))
        .route(
            "/api/hosts/{name}/first-boot-script/{token}",
            get(first_boot_script),
        )
        .route("/api/hosts/{name}/phone-home", post(phone_home))
}

/// Counts a boot-flow request by endpoint and outcome (refusals included),
/// for `/metrics`.
fn count(st: &AppState, endpoint: &'static str, outcome: &'static str) {
    st.metrics.boot_request(endpoint, outcome);
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

fn ipxe_response(script: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script,
    )
        .into_response()
}

async fn entry(State(st): State<SharedState>) -> Response {
    let base = st.settings.borrow().server.public_url.clone();
    match ipxe::entry_script(&st.boot.templates, &base) {
        Ok(s) => ipxe_response(s),
        Err(e) => super::api::internal(e),
    }
}

#[derive(Deserialize)]
struct PlatformQuery {
    platform: Option<String>,
}

async fn ipxe_script(
    State(st): State<SharedState>,
    Path(mac): Path<String>,
    Query(q): Query<PlatformQuery>,
) -> Response {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        count(&st, "ipxe", "bad_request");
        return refuse(StatusCode::BAD_REQUEST, "malformed MAC address");
    };
    let firmware = ipxe::Firmware::from_platform(q.platform.as_deref());
    let local = |st: &AppState, outcome: &'static str| {
        count(st, "ipxe", outcome);
        if let Some(s) = st.boot.local_boot.get(firmware) {
            return ipxe_response(s.clone());
        }
        match ipxe::local_boot_script(&st.boot.templates, firmware) {
            Ok(s) => ipxe_response(s),
            Err(e) => super::api::internal(e),
        }
    };
    let snapshot = st.snapshot.borrow().clone();
    let Some(host) = snapshot.host_by_mac(&mac).cloned() else {
        if st.boot.discover_unknown
            && let Err(e) = st.store.record_unknown_mac(&mac.to_string())
        {
            tracing::warn!(mac = %mac, error = %e, "cannot record an unknown machine");
        }
        // Debug, not info: in a boot storm this line would be written for
        // every request (the outcome is counted for /metrics either way).
        tracing::debug!(mac = %mac, "unknown MAC: local boot");
        return local(&st, "unknown");
    };
    let name = host.name.to_string();
    let (state, operation) = match st.store.host_boot_state(&name) {
        Ok(Some(s)) => s,
        Ok(None) => return local(&st, "local"),
        Err(e) => return super::api::internal(e),
    };
    let (true, Some(op)) = (state.is_armed(), operation) else {
        tracing::debug!(host = %name, mac = %mac, state = %state, "not armed: local boot");
        return local(&st, "local");
    };
    let Some(iso_sha256) = st.boot.iso_sha256.clone() else {
        tracing::error!(host = %name, "host is armed but proxmox.iso is not configured: local boot");
        return local(&st, "not_configured");
    };
    let params = ipxe::InstallParams {
        base_url: st.settings.borrow().server.public_url.clone(),
        host: name.clone(),
        iso_sha256,
        extra_kernel_args: st.boot.extra_kernel_args.clone(),
    };
    let script = match ipxe::install_script(&st.boot.templates, &params) {
        Ok(s) => s,
        Err(e) => return super::api::internal(e),
    };
    if state == HostState::PxeBooted {
        // Served before in this rebuild (the machine rebooted, or iPXE
        // retried): the same script again, but no state change to record.
        // Writing a transition per request would let one machine in a PXE
        // loop (or a boot storm) fill the history and serialise every such
        // request on the database.
        tracing::debug!(host = %name, mac = %mac, operation = op, "installer script served again");
        count(&st, "ipxe", "installer_again");
        return ipxe_response(script);
    }
    match st.store.apply(
        &name,
        op,
        EventKind::IpxeServed,
        "installer iPXE script served",
    ) {
        Ok(t) => {
            tracing::info!(host = %name, mac = %mac, state = %t.to, operation = op, "installer script served");
            count(&st, "ipxe", "installer");
            ipxe_response(script)
        }
        Err(e) => {
            tracing::warn!(host = %name, error = %e, "iPXE transition refused: local boot");
            local(&st, "refused")
        }
    }
}

/// Read size for the boot assets (kernel, initrd, ISO).
const FILE_CHUNK_BYTES: usize = 1 << 20;

async fn serve_path(path: Option<&PathBuf>, what: &str, req: axum::extract::Request) -> Response {
    use tower::ServiceExt;
    let Some(path) = path else {
        return refuse(StatusCode::NOT_FOUND, &format!("{what} is not configured"));
    };
    // 1 MiB reads instead of the default 64 KiB: every chunk is a hop to
    // the blocking pool, and an ISO is a gigabyte. Memory stays bounded
    // (one chunk in flight per download).
    match tower_http::services::ServeFile::new(path)
        .with_buf_chunk_size(FILE_CHUNK_BYTES)
        .oneshot(req)
        .await
    {
        Ok(r) => r.into_response(),
        Err(e) => super::api::internal(e),
    }
}

async fn kernel(State(st): State<SharedState>, req: axum::extract::Request) -> Response {
    serve_path(st.boot.kernel.as_ref(), "proxmox.kernel", req).await
}

async fn initrd(State(st): State<SharedState>, req: axum::extract::Request) -> Response {
    serve_path(st.boot.initrd.as_ref(), "proxmox.initrd", req).await
}

async fn iso(State(st): State<SharedState>, req: axum::extract::Request) -> Response {
    serve_path(st.boot.iso.as_ref(), "proxmox.iso", req).await
}

async fn overlay(State(st): State<SharedState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/gzip")],
        st.boot.overlay.clone(),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `POST /api/boot/answer`: the installer's system information in, the
/// TOML answer out — only for the one armed host among its MACs, only once
/// per rebuild.
async fn answer_file(State(st): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let refuse_404 = |st: &AppState, outcome: &'static str, why: &str| {
        count(st, "answer", outcome);
        refuse(StatusCode::NOT_FOUND, why)
    };
    if let Some(expected) = &st.boot.answer_token {
        let ok = bearer(&headers)
            .map(|t| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    t.as_bytes(),
                    expected.expose().as_bytes(),
                ))
            })
            .unwrap_or(false);
        if !ok {
            count(&st, "answer", "unauthorized");
            tracing::warn!("answer request without the configured bearer token");
            return refuse(StatusCode::UNAUTHORIZED, "missing or wrong answer token");
        }
    }
    let info = match sysinfo::SystemInfo::parse(&body) {
        Ok(i) => i,
        Err(e) => {
            count(&st, "answer", "bad_request");
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("bad system information: {e}"),
            );
        }
    };
    let macs = info.macs();
    let snapshot = st.snapshot.borrow().clone();
    let mut armed = Vec::new();
    for mac in &macs {
        if let Some(h) = snapshot.host_by_mac(mac) {
            match st.store.host(h.name.as_str()) {
                Ok(Some(r)) if r.state.is_armed() => armed.push((h.clone(), r)),
                Ok(_) => {}
                Err(e) => return super::api::internal(e),
            }
        }
    }
    let macs_text: Vec<String> = macs.iter().map(ToString::to_string).collect();
    let (host, record) = match armed.len() {
        1 => armed.remove(0),
        0 => {
            tracing::warn!(macs = ?macs_text, "answer refused: no armed host among the installer's MACs");
            return refuse_404(
                &st,
                "not_armed",
                "no host armed for a rebuild has these MACs",
            );
        }
        _ => {
            tracing::warn!(macs = ?macs_text, "answer refused: several armed hosts share this machine's MACs");
            return refuse_404(&st, "ambiguous", "several armed hosts match these MACs");
        }
    };
    let name = host.name.to_string();
    let Some(op_id) = record.operation else {
        return refuse_404(&st, "not_armed", "no open rebuild");
    };
    let op = match st.store.operation(op_id) {
        Ok(Some(op)) => op,
        Ok(None) => return refuse_404(&st, "not_armed", "no open rebuild"),
        Err(e) => return super::api::internal(e),
    };
    let uuid = info.dmi_uuid();
    if let (Some(seen), Some(now)) = (&op.dmi_uuid, &uuid)
        && seen != now
    {
        tracing::warn!(host = %name, "answer refused: DMI UUID differs from the one seen for this rebuild");
        return refuse_404(&st, "uuid_mismatch", "DMI UUID does not match this rebuild");
    }
    if op.answer_served_ms.is_some() {
        tracing::warn!(host = %name, operation = op_id, "answer refused: already served for this rebuild");
        return refuse_404(
            &st,
            "replay",
            "the answer for this rebuild was already served",
        );
    }
    let Some(hash) = &st.boot.root_password_hash else {
        tracing::error!(host = %name, "answer refused: answer.root_password_hash_file is not configured");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "root password hash not configured",
        );
    };
    let token = match Token::generate() {
        Ok(t) => t,
        Err(e) => return super::api::internal(e),
    };
    let public_url = st.settings.borrow().server.public_url.clone();
    let server_type = snapshot.server_types.get(&host.server_type).cloned();
    let params = answer::AnswerParams {
        host: &host,
        server_type: server_type.as_deref(),
        defaults: &st.boot.answer_defaults,
        root_password_hash: hash,
        ssh_public_key: &op.public_key,
        webhook_url: Some(firstboot::installed_webhook_url(
            &public_url,
            &host.name,
            token.expose(),
        )),
        first_boot_url: Some(firstboot::first_boot_script_url(
            &public_url,
            &host.name,
            token.expose(),
        )),
        cert_fingerprint: None,
    };
    let toml = match answer::build_answer(&params).and_then(|a| answer::to_toml(&a)) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(host = %name, error = %e, "cannot build the answer file");
            return super::api::internal(e);
        }
    };
    let update = OperationUpdate {
        dmi_uuid: uuid.clone(),
        ..OperationUpdate::default()
    };
    match st
        .store
        .serve_answer(&name, op_id, token.hash(), update, "answer file served")
    {
        Ok(t) => {
            tracing::info!(host = %name, state = %t.to, operation = op_id, "answer file served");
            count(&st, "answer", "served");
            // No kick: `installing` gives the reconciler nothing to do until
            // its deadline, which the periodic pass checks.
            ([(header::CONTENT_TYPE, "application/toml")], toml).into_response()
        }
        Err(e) => {
            tracing::warn!(host = %name, error = %e, "answer refused by the state machine");
            refuse_404(&st, "refused", "not in a state to receive an answer")
        }
    }
}

/// Finds the host's current operation and checks `token` against it.
/// (The refusal is a ready response; its size does not matter here.)
#[allow(clippy::result_large_err)]
/// Every failure is the same 404 (no oracle for names or tokens).
fn authorize(
    st: &AppState,
    name: &str,
    token: &str,
) -> Result<(String, OperationRecord, HostState), Response> {
    let not_found = || refuse(StatusCode::NOT_FOUND, "unknown host or token");
    let name =
        HostName::parse(name).map_err(|_| refuse(StatusCode::BAD_REQUEST, "invalid host name"))?;
    let name = name.to_string();
    let record = match st.store.host(&name) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(super::api::internal(e)),
    };
    let op_id = record.operation.ok_or_else(not_found)?;
    let hash = match st.store.token_hash(op_id) {
        Ok(Some(h)) => h,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(super::api::internal(e)),
    };
    if token.len() > 256 || !verify_token(token, &hash) {
        tracing::warn!(host = %name, "callback with a wrong token refused");
        return Err(not_found());
    }
    let op = match st.store.operation(op_id) {
        Ok(Some(op)) => op,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(super::api::internal(e)),
    };
    Ok((name, op, record.state))
}

/// `POST /api/hosts/{name}/installed/{token}`: the installer's
/// post-installation webhook. Pins the SSH host keys.
async fn installed(
    State(st): State<SharedState>,
    Path((name, token)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (name, op, state) = match authorize(&st, &name, &token) {
        Ok(v) => v,
        Err(r) => {
            count(&st, "installed", "refused");
            return r;
        }
    };
    // The stock installer has no error callback (it stops and the deadline
    // catches it); an installer wrapper may report `{"error": "…"}` here.
    if let Some(err) = installer_error(&body) {
        // Only the installer, while installing, reports errors here; a late
        // or replayed report must not fail a host that already installed.
        if state != HostState::Installing {
            count(&st, "installed", "wrong_state");
            return refuse(
                StatusCode::CONFLICT,
                &format!("not expected in state {state}"),
            );
        }
        let reason = format!("installer reported an error: {}", truncate(&err, 300));
        return match st.store.apply(&name, op.id, EventKind::Fail, &reason) {
            Ok(_) => {
                tracing::warn!(host = %name, operation = op.id, "{reason}");
                count(&st, "installed", "install_failed");
                st.kick.notify_one();
                (StatusCode::OK, "failure recorded\n").into_response()
            }
            Err(e) => refuse(StatusCode::CONFLICT, &format!("{e}")),
        };
    }
    let report = match sysinfo::InstalledReport::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            count(&st, "installed", "bad_request");
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("bad webhook payload: {e}"),
            );
        }
    };
    if state != HostState::Installing {
        if op.ssh_host_keys.is_some() && state.progress() > HostState::Installing.progress() {
            // A repeat of an applied webhook: acknowledge, change nothing.
            count(&st, "installed", "repeat");
            return (StatusCode::OK, "already recorded\n").into_response();
        }
        count(&st, "installed", "wrong_state");
        return refuse(
            StatusCode::CONFLICT,
            &format!("not expected in state {state}"),
        );
    }
    let keys = report.ssh_public_host_keys.present();
    if keys.is_empty() {
        count(&st, "installed", "bad_request");
        return refuse(
            StatusCode::BAD_REQUEST,
            "webhook payload has no SSH host keys to pin",
        );
    }
    let keys_json: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                serde_json::Value::String((*v).to_string()),
            )
        })
        .collect();
    let update = OperationUpdate {
        machine_id: report.machine_id.clone(),
        mgmt_address: report.management_address().map(|a| a.addr().to_string()),
        ssh_host_keys: Some(serde_json::Value::Object(keys_json)),
        ..OperationUpdate::default()
    };
    match st.store.apply_with(
        &name,
        op.id,
        EventKind::InstallReported,
        "post-installation webhook received",
        update,
    ) {
        Ok(_) => {
            tracing::info!(host = %name, operation = op.id, "installed; SSH host keys pinned");
            count(&st, "installed", "accepted");
            st.kick.notify_one();
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(e) => refuse(StatusCode::CONFLICT, &format!("{e}")),
    }
}

fn installer_error(body: &[u8]) -> Option<String> {
    if body.len() > super::MAX_BODY_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.as_str().map(str::to_string)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `GET /api/hosts/{name}/first-boot-script/{token}`: fetched by the
/// installer during installation.
async fn first_boot_script(
    State(st): State<SharedState>,
    Path((name, token)): Path<(String, String)>,
) -> Response {
    let (name, _op, state) = match authorize(&st, &name, &token) {
        Ok(v) => v,
        Err(r) => {
            count(&st, "first_boot_script", "refused");
            return r;
        }
    };
    if !matches!(state, HostState::Installing | HostState::Installed) {
        count(&st, "first_boot_script", "wrong_state");
        return refuse(
            StatusCode::CONFLICT,
            &format!("not expected in state {state}"),
        );
    }
    let Ok(host) = HostName::parse(&name) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid host name");
    };
    let params = firstboot::FirstBootParams {
        public_url: st.settings.borrow().server.public_url.clone(),
        host,
        token,
        deadline_secs: firstboot::DEFAULT_DEADLINE_SECS,
    };
    match firstboot::render(&st.boot.templates, &params) {
        Ok(script) => {
            count(&st, "first_boot_script", "served");
            ([(header::CONTENT_TYPE, "text/x-shellscript")], script).into_response()
        }
        Err(e) => super::api::internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneHome {
    ip: String,
    hardware_id: Option<String>,
}

/// `POST /api/hosts/{name}/phone-home` with `Authorization: Bearer <token>`.
async fn phone_home(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = bearer(&headers).map(str::to_string) else {
        count(&st, "phone_home", "refused");
        return refuse(StatusCode::UNAUTHORIZED, "missing bearer token");
    };
    let (name, op, state) = match authorize(&st, &name, &token) {
        Ok(v) => v,
        Err(r) => {
            count(&st, "phone_home", "refused");
            return r;
        }
    };
    let msg: PhoneHome = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            count(&st, "phone_home", "bad_request");
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("bad phone-home payload: {e}"),
            );
        }
    };
    let Ok(ip) = msg.ip.parse::<std::net::IpAddr>() else {
        count(&st, "phone_home", "bad_request");
        return refuse(StatusCode::BAD_REQUEST, "ip is not an IP address");
    };
    let hardware_id = msg.hardware_id.map(|h| truncate(&h, 128));
    match state {
        HostState::Installed => {}
        HostState::FirstBoot | HostState::Joining | HostState::Ready
            if op.phone_home_ip.is_some() =>
        {
            count(&st, "phone_home", "repeat");
            return (StatusCode::OK, "already recorded\n").into_response();
        }
        s => {
            count(&st, "phone_home", "wrong_state");
            return refuse(StatusCode::CONFLICT, &format!("not expected in state {s}"));
        }
    }
    let update = OperationUpdate {
        phone_home_ip: Some(ip.to_string()),
        hardware_id,
        ..OperationUpdate::default()
    };
    match st.store.apply_with(
        &name,
        op.id,
        EventKind::PhoneHome,
        "first boot phoned home",
        update,
    ) {
        Ok(_) => {
            tracing::info!(host = %name, operation = op.id, ip = %ip, "phoned home");
            count(&st, "phone_home", "accepted");
            st.kick.notify_one();
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(e) => refuse(StatusCode::CONFLICT, &format!("{e}")),
    }
}
