//! `provisioning serve`: wires the parts into one process.
//!
//! Order of start-up: state directory (0700) → store → first snapshot of the
//! declarations → HTTP listener → `READY=1`. Then four loops run until
//! shutdown: the declaration watcher (file events only enqueue a reload),
//! the reconciler (level-triggered: on every snapshot change, every kick from
//! a callback, and every [`REQUEUE`]), signal handling (SIGHUP reloads
//! settings and server types; SIGTERM/SIGINT stop gracefully) and the
//! watchdog.
//!
//! This module owns no logic of its own beyond wiring; decisions live in
//! `reconcile`, state changes in `store`.

use crate::decl::{DeclLoader, Snapshot};
use crate::reconcile::Reconciler;
use crate::server::{self, AppState};
use crate::settings::Settings;
use crate::state::HostState;
use crate::store::Store;
use crate::{systemd, watch};
use anyhow::Context;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch as tokio_watch};

/// How often the reconciler runs even when nothing happened (deadlines,
/// drift detection).
pub const REQUEUE: Duration = Duration::from_secs(2);

/// How long in-flight requests may take after a stop was requested.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long the reconciler gathers kicks before the pass they asked for.
pub const KICK_COALESCE: Duration = Duration::from_millis(25);

/// How long file events are collected before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(80);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn watched_dirs(settings: &Settings) -> Vec<PathBuf> {
    let mut dirs = vec![settings.paths.hosts_dir.clone()];
    dirs.extend(settings.paths.extra_hosts_dirs.iter().cloned());
    if let Some(st) = &settings.paths.server_types
        && let Some(parent) = st.parent()
    {
        dirs.push(parent.to_path_buf());
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

fn load_snapshot(loader: &mut DeclLoader, settings: &Settings) -> Snapshot {
    loader.load_all(
        &settings.paths.hosts_dir,
        settings.paths.server_types.as_deref(),
    )
}

fn log_diagnostics(snapshot: &Snapshot) {
    for d in &snapshot.diagnostics {
        tracing::warn!(file = %d.file.display(), line = d.line, column = d.column, "{}", d.message);
    }
}

/// A one-line summary for `STATUS=`: "5 hosts: 4 ready, 1 installing".
pub fn status_line(store: &Store, snapshot: &Snapshot) -> String {
    let mut line = format!("{} hosts", snapshot.hosts.len());
    if let Ok(stats) = store.stats() {
        let parts: Vec<String> = stats
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        if !parts.is_empty() {
            line.push_str(": ");
            line.push_str(&parts.join(", "));
        }
    }
    let errors = snapshot.diagnostics.len();
    if errors > 0 {
        line.push_str(&format!("; {errors} declaration problem(s)"));
    }
    line
}

/// Runs the daemon until `shutdown` resolves or SIGTERM/SIGINT arrives.
pub async fn run(
    mut settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !settings.server.public_url_explicit {
        // Machines must be sent to the address we really listen on.
        settings.server.public_url = format!("http://{}", listener.local_addr()?);
    }
    let state_dir = settings.paths.state_dir.clone();
    create_private_dir(&state_dir)?;
    if !settings.paths.hosts_dir.is_dir() {
        anyhow::bail!(
            "hosts directory {} does not exist (set paths.hosts_dir)",
            settings.paths.hosts_dir.display()
        );
    }
    let db = state_dir.join("provisioning.sqlite3");
    let store = Arc::new(
        Store::open(&db).with_context(|| format!("cannot open the store at {}", db.display()))?,
    );

    let boot = boot_context(&settings)?;
    let (stopping_tx, stopping_rx) = tokio_watch::channel(false);
    let mut loader = DeclLoader::new();
    let first = load_snapshot(&mut loader, &settings);
    log_diagnostics(&first);
    tracing::info!(
        hosts = first.hosts.len(),
        server_types = first.server_types.len(),
        problems = first.diagnostics.len(),
        "declarations loaded"
    );
    let (snap_tx, snap_rx) = tokio_watch::channel(Arc::new(first));
    let (settings_tx, settings_rx) = tokio_watch::channel(Arc::new(settings.clone()));
    let kick = Arc::new(Notify::new());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    crate::metrics::start_collector(metrics.clone(), store.clone());

    // The watcher only enqueues; the loader task owns the per-file cache.
    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut dirs = watched_dirs(&settings);
    let mut watcher = watch::watch_dirs(&dirs, DEBOUNCE, fs_tx.clone())
        .with_context(|| format!("cannot watch {dirs:?}"))?;
    // SIGHUP asks the loader for a full reload with the new settings.
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<Arc<Settings>>();
    {
        let snap_tx = snap_tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // The watcher lives with the loader: a reload that moves the
            // hosts directory (or the server-types file) moves the watch too.
            loop {
                let next = tokio::select! {
                    Some(paths) = fs_rx.recv() => {
                        let s = loader.reload(&paths);
                        Some(s)
                    }
                    Some(new_settings) = reload_rx.recv() => {
                        let new_dirs = watched_dirs(&new_settings);
                        if new_dirs != dirs {
                            match watch::watch_dirs(&new_dirs, DEBOUNCE, fs_tx.clone()) {
                                Ok(w) => {
                                    tracing::info!(dirs = ?new_dirs, "now watching the reloaded directories");
                                    // The old watch ends when it is dropped.
                                    drop(std::mem::replace(&mut watcher, w));
                                    dirs = new_dirs;
                                }
                                // The old watch stays: edits there still reload.
                                Err(e) => tracing::error!(dirs = ?new_dirs, error = %e, "cannot watch the reloaded directories; edits there need another reload"),
                            }
                        }
                        Some(load_snapshot(&mut loader, &new_settings))
                    }
                    else => None,
                };
                let Some(s) = next else { return };
                let changed_diags = snap_tx.borrow().diagnostics != s.diagnostics;
                if changed_diags {
                    log_diagnostics(&s);
                }
                tracing::debug!(hosts = s.hosts.len(), "declarations reloaded");
                metrics.declaration_reloaded();
                metrics.set_declaration_errors(
                    s.diagnostics
                        .iter()
                        .filter(|d| d.severity == crate::decl::Severity::Error)
                        .count() as u64,
                );
                snap_tx.send_replace(Arc::new(s));
            }
        });
    }

    let joins = Arc::new(join_driver(&settings, store.clone(), kick.clone())?);
    // A reload gives joins started from then on the new settings and re-reads
    // the join password and Infrastructure token files (rotated secrets).
    {
        let joins = joins.clone();
        let store = store.clone();
        let kick = kick.clone();
        let mut settings_rx = settings_rx.clone();
        tokio::spawn(async move {
            while settings_rx.changed().await.is_ok() {
                let s = settings_rx.borrow_and_update().clone();
                match join_context(&s, store.clone(), kick.clone()) {
                    Ok(ctx) => {
                        joins.reconfigure(ctx);
                        tracing::info!("join: new settings for joins started from now on");
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "join: cannot apply the reloaded settings; joins keep the previous ones")
                    }
                }
            }
        });
    }

    // The reconciler: level-triggered on snapshot changes, kicks and a tick.
    {
        let joins = joins.clone();
        let store = store.clone();
        let mut snap_rx = snap_rx.clone();
        let settings_rx = settings_rx.clone();
        let kick = kick.clone();
        tokio::spawn(async move {
            let mut last_status = String::new();
            loop {
                let snapshot = snap_rx.borrow_and_update().clone();
                let settings = settings_rx.borrow().clone();
                let st = store.clone();
                let snap = snapshot.clone();
                let joins = joins.clone();
                // The whole pass runs on the blocking pool: over 10,000 hosts
                // it takes milliseconds that the async workers owe to the
                // machines asking for boot scripts.
                let result = tokio::task::spawn_blocking(move || {
                    let r = Reconciler::new(crate::reconcile::Deadlines::from(&settings.deadlines));
                    let out = r.try_reconcile_all(&snap, &st, now_ms(), &|h, g| {
                        crate::reconcile::fresh_secrets(h, g)
                    });
                    if let Ok(applied) = &out {
                        wake(&settings, &st, &snap, applied);
                        // Hosts that phoned home (or were joining when we
                        // stopped) get their join task.
                        if let Ok(records) = st.hosts() {
                            for r in records.iter().filter(|r| {
                                matches!(r.state, HostState::FirstBoot | HostState::Joining)
                            }) {
                                if let Ok(n) = crate::decl::HostName::parse(&r.name)
                                    && let Some(h) = snap.hosts.get(&n)
                                {
                                    joins.ensure_running(h, r);
                                }
                            }
                        }
                    }
                    (out, status_line(&st, &snap))
                })
                .await;
                match result {
                    Ok((Ok(_applied), status)) => {
                        if status != last_status {
                            systemd::status(&status);
                            last_status = status;
                        }
                    }
                    Ok((Err(e), _)) => tracing::error!(error = %e, "reconcile failed"),
                    Err(e) => tracing::error!(error = %e, "reconcile task failed"),
                }
                let kicked = tokio::select! {
                    r = snap_rx.changed() => { if r.is_err() { return } false }
                    _ = kick.notified() => true,
                    _ = tokio::time::sleep(REQUEUE) => false,
                };
                if kicked {
                    // Callbacks come in storms (a rack finishing its install):
                    // one pass for all the kicks of a short window, not one
                    // full pass over the fleet per callback.
                    tokio::time::sleep(KICK_COALESCE).await;
                    let _ = futures_util::FutureExt::now_or_never(kick.notified());
                }
            }
        });
    }

    let dnsmasq_status = start_dnsmasq(
        &settings,
        store.clone(),
        snap_rx.clone(),
        stopping_rx.clone(),
    )
    .await?;

    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(interval);
            loop {
                t.tick().await;
                systemd::watchdog_ping();
            }
        });
    }

    // Metrics follow the store's events from here on.
    let state = AppState {
        store: store.clone(),
        snapshot: snap_rx.clone(),
        settings: settings_rx.clone(),
        kick: kick.clone(),
        boot: Arc::new(boot),
        stopping: stopping_rx.clone(),
        dnsmasq: dnsmasq_status,
        metrics: metrics.clone(),
    };
    let state_stopping = stopping_rx;
    let router = server::app(state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    eprintln!("provisioning: listening on http://{addr}");

    // Signals: SIGHUP reloads, SIGTERM/SIGINT stop.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let source = settings.source.clone();
        let bound_url = format!("http://{addr}");
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::hangup()),
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        systemd::reloading();
                        let loaded = match &source {
                            Some(p) => Settings::load(p),
                            None => Settings::embedded_default(),
                        };
                        match loaded {
                            Ok(mut s) => {
                                if !s.server.public_url_explicit {
                                    s.server.public_url = bound_url.clone();
                                }
                                tracing::info!("settings reloaded");
                                let s = Arc::new(s);
                                settings_tx.send_replace(s.clone());
                                let _ = reload_tx.send(s);
                            }
                            Err(e) => tracing::error!(error = %e, "settings reload failed; keeping the previous settings"),
                        }
                        systemd::ready("settings reloaded");
                    }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            let _ = stop_tx.send(());
        });
    }

    let status = status_line(&store, &snap_rx.borrow());
    systemd::ready(&status);
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = stop_rx => {}
        }
        tracing::info!("stopping");
        systemd::stopping();
        stopping_tx.send_replace(true);
    };
    // In-flight requests get a grace period; a client that keeps a download
    // open does not keep the daemon alive forever.
    let mut stopping_watch = state_stopping;
    let serve = server::run(listener, router, stop);
    tokio::select! {
        r = serve => r?,
        _ = async {
            let _ = stopping_watch.wait_for(|s| *s).await;
            tokio::time::sleep(GRACE).await;
        } => tracing::warn!("requests still open after {GRACE:?}; stopping anyway"),
    }
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
    }
    Ok(())
}

/// The dnsmasq parameters the settings describe (`None` when PXE is off).
/// One renderer for every way of running dnsmasq: the spawned child, the
/// NixOS unit (`provisioning dnsmasq-config`) and the tests.
pub fn dnsmasq_params(settings: &Settings) -> Option<crate::boot::dnsmasq::DnsmasqParams> {
    let pxe = settings.pxe.as_ref()?;
    let mut p = crate::boot::dnsmasq::DnsmasqParams::new(
        pxe.interface.clone(),
        pxe.subnet,
        pxe.server_address,
        settings.server.public_url.clone(),
        pxe.ipxe_dir.clone(),
        pxe.hostsdir.clone(),
    );
    p.discover_unknown = pxe.discover_unknown;
    // A spawned dnsmasq keeps our user: its default (`nobody`) could not
    // read the hostsdir inside our private state directory.
    if pxe.dnsmasq == crate::settings::DnsmasqMode::Spawn {
        p.user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name);
    }
    Some(p)
}

/// Builds what the boot endpoints need from the settings: templates, the
/// overlay archive, asset paths, the ISO checksum, the root password hash
/// and the answer defaults. Errors name the setting and the file, never a
/// secret's content.
pub fn boot_context(settings: &Settings) -> anyhow::Result<crate::server::boot::BootContext> {
    use crate::boot::answer::{AnswerDefaults, Keyboard, PasswordHash, RebootMode};
    let templates = crate::templates::Templates::new(settings.paths.templates_dir.as_deref())
        .context("cannot load the templates")?;
    crate::dashboard::use_templates_dir(settings.paths.templates_dir.as_deref())
        .context("cannot load the dashboard templates")?;
    let root_password_hash = match &settings.answer.root_password_hash_file {
        Some(p) => {
            let secret = crate::secrets::read_secret_file(p)
                .with_context(|| "answer.root_password_hash_file".to_string())?;
            Some(PasswordHash::parse(secret.expose()).map_err(|e| {
                anyhow::anyhow!("answer.root_password_hash_file {}: {e}", p.display())
            })?)
        }
        None => None,
    };
    let answer_token = match &settings.proxmox.answer_token_file {
        Some(p) => Some(
            crate::secrets::read_secret_file(p)
                .with_context(|| "proxmox.answer_token_file".to_string())?,
        ),
        None => None,
    };
    let keyboard: Keyboard = settings
        .answer
        .keyboard
        .parse()
        .map_err(|e| anyhow::anyhow!("answer.keyboard: {e}"))?;
    let iso_sha256 = match (&settings.proxmox.iso, &settings.proxmox.iso_sha256) {
        (_, Some(sha)) => Some(sha.clone()),
        (Some(iso), None) => Some(cached_sha256(iso, &settings.paths.state_dir)?),
        (None, None) => None,
    };
    let extra_kernel_args = settings
        .pxe
        .as_ref()
        .map(|p| {
            p.kernel_args
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let local_boot = crate::server::boot::LocalBootScripts::render(&templates);
    Ok(crate::server::boot::BootContext {
        local_boot,
        templates,
        overlay: crate::boot::overlay::build_overlay(),
        kernel: settings.proxmox.kernel.clone(),
        initrd: settings.proxmox.initrd.clone(),
        iso: settings.proxmox.iso.clone(),
        iso_sha256,
        extra_kernel_args,
        root_password_hash,
        answer_defaults: AnswerDefaults {
            keyboard,
            country: settings.answer.country.to_ascii_lowercase(),
            timezone: settings.answer.timezone.clone(),
            mailto: settings.answer.mailto.clone(),
            domain: settings.answer.domain.clone(),
            reboot_on_error: false,
            reboot_mode: RebootMode::Reboot,
        },
        answer_token,
        discover_unknown: settings.pxe.as_ref().is_some_and(|p| p.discover_unknown),
    })
}

/// SHA-256 of the ISO, cached in the state directory by path, size and
/// modification time so a restart does not re-read a 1.5 GB file.
fn cached_sha256(iso: &std::path::Path, state_dir: &std::path::Path) -> anyhow::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let meta = std::fs::metadata(iso).with_context(|| format!("proxmox.iso {}", iso.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!("{}\t{}\t{}", iso.display(), meta.len(), mtime);
    let cache = state_dir.join("iso-sha256.cache");
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Some((k, v)) = text.trim_end().rsplit_once('\t')
        && k == key
        && v.len() == 64
    {
        return Ok(v.to_string());
    }
    tracing::info!(iso = %iso.display(), bytes = meta.len(), "computing the ISO's SHA-256");
    let mut f =
        std::fs::File::open(iso).with_context(|| format!("proxmox.iso {}", iso.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex = hex::encode(hasher.finalize());
    let _ = std::fs::write(&cache, format!("{key}\t{hex}\n"));
    Ok(hex)
}

/// Sends Wake-on-LAN for hosts whose rebuild just started and that asked
/// for it, and records each packet in the history.
fn wake(
    settings: &Settings,
    store: &Store,
    snapshot: &Snapshot,
    applied: &[crate::reconcile::Applied],
) {
    for a in applied {
        let Some((_, op)) = a.started_rebuild() else {
            continue;
        };
        let Ok(name) = crate::decl::HostName::parse(&a.host) else {
            continue;
        };
        let Some(host) = snapshot.hosts.get(&name) else {
            continue;
        };
        if !host.wake_on_lan {
            continue;
        }
        let (broadcast, iface) = match &settings.pxe {
            Some(p) => (p.wol_broadcast, Some(p.interface.as_str())),
            None => (std::net::Ipv4Addr::BROADCAST, None),
        };
        let target = std::net::SocketAddrV4::new(broadcast, 9);
        let msg = match crate::boot::wol::send(host.mac, target, iface) {
            Ok(()) => format!("Wake-on-LAN magic packet sent to {target} for {}", host.mac),
            Err(e) => format!("Wake-on-LAN failed: {e}"),
        };
        tracing::info!(host = %name, mac = %host.mac, operation = op, "{msg}");
        if let Err(e) = store.add_note(&a.host, Some(op), "wake-on-lan", &msg) {
            tracing::warn!(host = %name, error = %e, "cannot record the Wake-on-LAN note");
        }
    }
}

/// Keeps dnsmasq's `dhcp-hostsdir` equal to the declared MACs and, with
/// `pxe.dnsmasq: spawn`, runs dnsmasq as a supervised child (config written
/// to the state directory and checked with `dnsmasq --test` first). MACs that
/// dnsmasq saw but nobody declared are recorded when discovery is on.
async fn start_dnsmasq(
    settings: &Settings,
    store: Arc<Store>,
    mut snap_rx: tokio_watch::Receiver<Arc<Snapshot>>,
    stopping: tokio_watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio_watch::Receiver<crate::boot::dnsmasq::DnsmasqStatus>>> {
    use crate::boot::dnsmasq;
    use crate::settings::DnsmasqMode;
    let (Some(pxe), Some(params)) = (settings.pxe.clone(), dnsmasq_params(settings)) else {
        return Ok(None);
    };
    if pxe.dnsmasq == DnsmasqMode::Off {
        return Ok(None);
    }
    let mut handle = None;
    if pxe.dnsmasq == DnsmasqMode::Spawn {
        dnsmasq::prepare_runtime(&params).context("dnsmasq cannot start")?;
        let conf = settings.paths.state_dir.join("dnsmasq.conf");
        let text = dnsmasq::render_config(&params)?;
        std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
        dnsmasq::test_config(&pxe.dnsmasq_binary, &conf)
            .await
            .context("the rendered dnsmasq configuration does not pass `dnsmasq --test`")?;
        let (h, sup) =
            dnsmasq::supervisor(dnsmasq::SpawnParams::new(pxe.dnsmasq_binary.clone(), conf));
        let mut stop = stopping.clone();
        tokio::spawn(sup.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        handle = Some(h);
    } else {
        std::fs::create_dir_all(&pxe.hostsdir)
            .with_context(|| format!("cannot create pxe.hostsdir {}", pxe.hostsdir.display()))?;
    }
    let status = handle.as_ref().map(|h| h.status.clone());
    // Take the seen-MAC receiver out of the handle (a dummy stays behind) so
    // that waiting on it never blocks a restart request.
    let seen = handle
        .as_mut()
        .map(|h| std::mem::replace(&mut h.seen, tokio::sync::mpsc::channel(1).1));
    let restart = handle;
    if let Some(mut seen) = seen {
        let store = store.clone();
        let snap_rx = snap_rx.clone();
        let discover = pxe.discover_unknown;
        tokio::spawn(async move {
            while let Some(seen) = seen.recv().await {
                let declared = snap_rx.borrow().by_mac.contains_key(&seen.mac);
                if !declared
                    && discover
                    && let Err(e) = store.record_unknown_mac(&seen.mac.to_string())
                {
                    tracing::warn!(mac = %seen.mac, error = %e, "cannot record an unknown machine");
                }
            }
        });
    }
    // The hostsdir follows the snapshot.
    let dir = pxe.hostsdir.clone();
    tokio::spawn(async move {
        loop {
            let macs: Vec<crate::mac::MacAddr> = {
                let snap = snap_rx.borrow_and_update();
                let mut m: Vec<_> = snap.by_mac.keys().copied().collect();
                m.sort();
                m
            };
            let entries: Vec<(crate::mac::MacAddr, Option<&str>)> =
                macs.iter().map(|m| (*m, None)).collect();
            match dnsmasq::write_hostsdir(&dir, &entries) {
                Ok(change) => {
                    if change.removed > 0
                        && let Some(h) = &restart
                    {
                        tracing::info!(
                            removed = change.removed,
                            "MACs removed from the hostsdir: restarting dnsmasq"
                        );
                        h.request_restart();
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot write the dnsmasq hostsdir"),
            }
            if snap_rx.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(status)
}

/// The join driver with its secrets read from their files (the join
/// password, the Infrastructure token). A missing join password is not an
/// error here: the join then fails visibly for the host that needs it.
fn join_driver(
    settings: &Settings,
    store: Arc<Store>,
    kick: Arc<Notify>,
) -> anyhow::Result<crate::join::driver::JoinDriver> {
    Ok(crate::join::driver::JoinDriver::new(join_context(
        settings, store, kick,
    )?))
}

/// The join's settings, secrets (read from their files now) and
/// Infrastructure client.
fn join_context(
    settings: &Settings,
    store: Arc<Store>,
    kick: Arc<Notify>,
) -> anyhow::Result<crate::join::driver::JoinContext> {
    use crate::join::driver::JoinContext;
    let join_password = match &settings.proxmox.join_password_file {
        Some(p) => Some(
            crate::secrets::read_secret_file(p)
                .with_context(|| "proxmox.join_password_file".to_string())?,
        ),
        None => None,
    };
    let infra = match &settings.infrastructure.base_url {
        Some(url) => {
            let token = match &settings.infrastructure.token_file {
                Some(p) => Some(
                    crate::secrets::read_secret_file(p)
                        .with_context(|| "infrastructure.token_file".to_string())?,
                ),
                None => None,
            };
            Some(
                crate::join::infra::InfraClient::new(url, token, settings.infrastructure.timeout)
                    .map_err(|e| anyhow::anyhow!("infrastructure.base_url: {e}"))?,
            )
        }
        None => {
            tracing::info!("infrastructure.base_url is empty: registration is skipped");
            None
        }
    };
    Ok(JoinContext::new(
        store,
        Arc::new(settings.clone()),
        join_password,
        infra,
        kick,
    ))
}
