//! The pxe-init overlay: reproducible archive bytes, what Debian's `cpio`
//! sees in it, the golden text of `/pxe-init`, shellcheck, and dry runs of
//! the script under busybox alone and under full tools against a loopback
//! HTTP server.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use provisioning::boot::overlay;
use sha2::Digest;

fn overlay_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("overlay")
}

/// The path of a tool, from PATH or Debian's directories.
fn tool(name: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(std::path::PathBuf::from));
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("this test needs `{name}` installed (see HELPERS.md for the Debian packages)");
}

#[test]
fn archive_is_byte_identical_across_builds() {
    let a = overlay::build_overlay();
    let b = overlay::build_overlay();
    assert!(!a.is_empty());
    assert_eq!(a, b);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("overlay.cpio.gz");
    overlay::build_to(&p).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), a);
    overlay::build_to(&p).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), a);
    // Only the archive is left behind, no temporary file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn gzip_header_has_no_time_stamp_and_no_name() {
    let a = overlay::build_overlay();
    assert_eq!(&a[..3], &[0x1f, 0x8b, 8], "gzip magic + deflate");
    assert_eq!(a[3], 0, "no FNAME/FEXTRA/FCOMMENT flags");
    assert_eq!(&a[4..8], &[0, 0, 0, 0], "mtime 0");
}

fn cpio_list(verbose: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("overlay.cpio.gz");
    overlay::build_to(&p).unwrap();
    let cpio = tool("cpio");
    let gzip = tool("gzip");
    let flags = if verbose { "-tv" } else { "-t" };
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e; {gzip} -dc '{}' | {cpio} {flags} --quiet",
            p.display()
        ))
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cpio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn debian_cpio_lists_exactly_pxe_init() {
    assert_eq!(cpio_list(false), "pxe-init\n");
}

#[test]
fn debian_cpio_shows_mode_0755_root_owned() {
    let listing = cpio_list(true);
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(fields[0], "-rwxr-xr-x", "{listing}");
    assert_eq!(fields[2], "root", "{listing}");
    assert_eq!(fields[3], "root", "{listing}");
    assert_eq!(fields.last(), Some(&"pxe-init"), "{listing}");
}

#[test]
fn embedded_tree_matches_the_overlay_directory() {
    let mut on_disk = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            out.push(rel);
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(&overlay_dir(), &overlay_dir(), &mut on_disk);
    let embedded: Vec<String> = overlay::ENTRIES.iter().map(|e| e.path.to_owned()).collect();
    assert_eq!(embedded, on_disk, "overlay::ENTRIES must list overlay/");
    for e in overlay::ENTRIES {
        let p = overlay_dir().join(e.path);
        if let Some(contents) = e.contents {
            assert_eq!(std::fs::read(&p).unwrap(), contents, "{}", e.path);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, e.mode, "mode of overlay/{} in git", e.path);
    }
}

#[test]
fn pxe_init_golden() {
    let text = std::str::from_utf8(overlay::pxe_init()).unwrap();
    insta::assert_snapshot!("pxe_init", text);
}

#[test]
fn pxe_init_passes_shellcheck() {
    let out = Command::new(tool("shellcheck"))
        .args(["-s", "sh"])
        .arg(overlay_dir().join("pxe-init"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[derive(Clone)]
enum Reply {
    Status(u16),
    Body(Vec<u8>),
    /// Promises the whole body, sends a little of it, then goes silent.
    Stall(Vec<u8>),
}

/// A loopback HTTP server answering each request with the next scripted
/// reply, repeating the last one.
fn http_server(replies: Vec<Reply>) -> (String, Arc<Mutex<u32>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(0u32));
    let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            *h.lock().unwrap() += 1;
            let reply = {
                let mut q = queue.lock().unwrap();
                if q.len() > 1 {
                    q.pop_front().unwrap()
                } else {
                    q.front().cloned().unwrap()
                }
            };
            let (status, body, sent) = match &reply {
                Reply::Status(code) => (*code, &b"error"[..], 5),
                Reply::Body(body) => (200, &body[..], body.len()),
                Reply::Stall(body) => (200, &body[..], 1000),
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body[..sent]);
            if matches!(reply, Reply::Stall(_)) {
                // Hold the connection open without sending, off the accept loop.
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(20));
                    drop(conn);
                });
            }
        }
    });
    (format!("http://{addr}/pve.iso"), hits)
}

struct DryRun {
    ok: bool,
    output: String,
    root: tempfile::TempDir,
}

/// Runs `/pxe-init` in dry-run mode. `busybox_only`: under busybox's shell
/// with a PATH that holds nothing but busybox; otherwise under `sh` with the
/// machine's full tools (curl, coreutils).
fn dry_run(cmdline: &str, busybox_only: bool) -> DryRun {
    let root = tempfile::tempdir().unwrap();
    let script = overlay_dir().join("pxe-init");
    let mut cmd = if busybox_only {
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let busybox = tool("busybox");
        std::os::unix::fs::symlink(&busybox, bin.join("busybox")).unwrap();
        let mut c = Command::new(busybox);
        c.arg("sh").arg(&script).env("PXE_INIT_PATH", &bin);
        c
    } else {
        // The script's own PATH is Debian's; hand it ours so the same test
        // runs where tools live elsewhere (a Nix build).
        let mut c = Command::new("sh");
        c.arg(&script).env(
            "PXE_INIT_PATH",
            std::env::var_os("PATH").unwrap_or_default(),
        );
        c
    };
    let out = cmd
        .arg("installer-arg")
        .env("PXE_INIT_DRY_RUN", "1")
        .env("PXE_INIT_CMDLINE", cmdline)
        .env("PXE_INIT_ROOT", root.path())
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    DryRun {
        ok: out.status.success(),
        output,
        root,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn fake_iso() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

fn check_download_retries_then_succeeds(busybox_only: bool) {
    let iso = fake_iso();
    let (url, hits) = http_server(vec![Reply::Status(500), Reply::Body(iso.clone())]);
    let run = dry_run(
        &format!(
            "quiet pxe.iso_url={url} pxe.iso_sha256={} pxe.retries=3 pxe.retry_delay=0 splash=silent",
            sha256_hex(&iso).to_uppercase()
        ),
        busybox_only,
    );
    assert!(run.ok, "{}", run.output);
    assert!(
        run.output.contains("pxe-init: attempt 1 of 3"),
        "{}",
        run.output
    );
    assert!(
        run.output
            .contains(&format!("pxe-init: download of {url} failed")),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("pxe-init: attempt 2 of 3"),
        "{}",
        run.output
    );
    assert!(
        run.output
            .contains("pxe-init: dry run: would exec /init installer-arg"),
        "{}",
        run.output
    );
    assert_eq!(
        std::fs::read(run.root.path().join("proxmox.iso")).unwrap(),
        iso
    );
    assert!(!run.root.path().join("proxmox.iso.part").exists());
    assert_eq!(*hits.lock().unwrap(), 2);
}

#[test]
fn dry_run_busybox_only_retries_then_hands_over() {
    check_download_retries_then_succeeds(true);
}

#[test]
fn dry_run_full_tools_retries_then_hands_over() {
    tool("curl");
    check_download_retries_then_succeeds(false);
}

fn check_checksum_mismatch_gives_up(busybox_only: bool) {
    let iso = fake_iso();
    let (url, hits) = http_server(vec![Reply::Body(iso)]);
    let wrong = "0".repeat(64);
    let run = dry_run(
        &format!("pxe.iso_url={url} pxe.iso_sha256={wrong} pxe.retries=2 pxe.retry_delay=0"),
        busybox_only,
    );
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output.contains(&format!(
            "pxe-init: SHA-256 mismatch: expected {wrong}, got "
        )),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("pxe-init: giving up: SHA-256 mismatch"),
        "{}",
        run.output
    );
    assert!(run.output.contains("(after 2 attempts)"), "{}", run.output);
    assert!(!run.root.path().join("proxmox.iso").exists());
    assert!(!run.root.path().join("proxmox.iso.part").exists());
    assert_eq!(*hits.lock().unwrap(), 2);
}

#[test]
fn dry_run_busybox_only_checksum_mismatch_gives_up() {
    check_checksum_mismatch_gives_up(true);
}

#[test]
fn dry_run_full_tools_checksum_mismatch_gives_up() {
    check_checksum_mismatch_gives_up(false);
}

#[test]
fn dry_run_rejects_a_bad_command_line_clearly() {
    let sha = "a".repeat(64);
    for (cmdline, message) in [
        (
            format!("quiet pxe.iso_sha256={sha}"),
            "pxe-init: giving up: no pxe.iso_url= on the kernel command line",
        ),
        (
            "pxe.iso_url=http://127.0.0.1:1/x pxe.iso_sha256=abc".to_owned(),
            "pxe-init: giving up: pxe.iso_sha256= must be 64 hex digits",
        ),
        (
            format!(
                "pxe.iso_url=http://127.0.0.1:1/x pxe.iso_sha256={}",
                "g".repeat(64)
            ),
            "pxe-init: giving up: pxe.iso_sha256= is not hexadecimal",
        ),
    ] {
        let run = dry_run(&cmdline, false);
        assert!(!run.ok, "{cmdline}: {}", run.output);
        assert!(run.output.contains(message), "{cmdline}: {}", run.output);
    }
}

fn check_stalled_download_is_aborted_and_retried(busybox_only: bool) {
    let iso = fake_iso();
    let (url, hits) = http_server(vec![Reply::Stall(iso.clone()), Reply::Body(iso.clone())]);
    let started = std::time::Instant::now();
    let run = dry_run(
        &format!(
            "pxe.iso_url={url} pxe.iso_sha256={} pxe.retries=2 pxe.retry_delay=0 pxe.stall_timeout=2",
            sha256_hex(&iso)
        ),
        busybox_only,
    );
    assert!(run.ok, "{}", run.output);
    assert!(
        run.output
            .contains(&format!("pxe-init: download of {url} failed")),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("pxe-init: attempt 2 of 2"),
        "{}",
        run.output
    );
    assert_eq!(
        std::fs::read(run.root.path().join("proxmox.iso")).unwrap(),
        iso
    );
    assert_eq!(*hits.lock().unwrap(), 2);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the stall was not cut short: {:?}",
        started.elapsed()
    );
}

#[test]
fn dry_run_busybox_only_aborts_a_stalled_download() {
    check_stalled_download_is_aborted_and_retried(true);
}

#[test]
fn dry_run_full_tools_aborts_a_stalled_download() {
    check_stalled_download_is_aborted_and_retried(false);
}
