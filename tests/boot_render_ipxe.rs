//! The rendered iPXE scripts run under the real iPXE (Debian's `ipxe.lkrn`,
//! the 2019 build the lab uses) in QEMU (TCG): the script is passed as the
//! initrd, which iPXE executes. Without a NIC this exercises the failure
//! paths (retries, then `exit 1` so the firmware moves on); with QEMU's
//! user-mode network (whose only peer is a server on this host's loopback)
//! it exercises the installer script's happy path (kernel, `initrd.img`,
//! `overlay.cpio.gz`, boot) and the entry script's chain to
//! `/ipxe/{mac}?platform=…`.
//!
//! Requires `qemu-system-x86_64` (Debian qemu-system-x86) and
//! `/usr/lib/ipxe/ipxe.lkrn` (Debian ipxe).

use provisioning::boot::ipxe::{self, Firmware, InstallParams};
use provisioning::templates::Templates;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LKRN: &str = "/usr/lib/ipxe/ipxe.lkrn";
/// SeaBIOS prints this when iPXE has exited and it tries the next device.
const FIRMWARE_MOVED_ON: &str = "Booting from Hard Disk";

fn require_tools() {
    assert!(
        Path::new(LKRN).exists(),
        "{LKRN} is missing: install the Debian package ipxe"
    );
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is missing: install the Debian package qemu-system-x86"
    );
}

/// Boots `ipxe.lkrn` with `script` as its initrd and returns the serial
/// console output up to `until` (or everything after 150 s).
fn run_ipxe(script: &str, user_net: bool, until: &str) -> String {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.ipxe");
    std::fs::write(&path, script).unwrap();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "pc", "-m", "256", "-accel", "tcg", "-nographic"])
        .args(["-no-reboot", "-kernel", LKRN, "-initrd"])
        .arg(&path);
    if user_net {
        // romfile= (empty) keeps SeaBIOS from network-booting the NIC itself.
        cmd.args([
            "-netdev",
            "user,id=n0,restrict=off",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
        ]);
    } else {
        cmd.args(["-nic", "none"]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 must start");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if String::from_utf8_lossy(&out).contains(until) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&out).into_owned()
}

fn templates() -> Templates {
    Templates::new(None).unwrap()
}

#[test]
fn install_script_retries_then_hands_back_to_the_firmware() {
    let script = ipxe::install_script(
        &templates(),
        &InstallParams {
            base_url: "http://10.0.0.1:8080".into(),
            host: "pve-01".into(),
            iso_sha256: "ab".repeat(32),
            extra_kernel_args: vec![],
        },
    )
    .unwrap();
    let out = run_ipxe(&script, false, FIRMWARE_MOVED_ON);
    for attempt in 1..=3 {
        assert!(
            out.contains(&format!("attempt {attempt} of 3")),
            "attempt {attempt} missing:\n{out}"
        );
    }
    assert!(!out.contains("attempt 4"), "{out}");
    let gave_up = out
        .find("could not load the installer after 3 attempts")
        .unwrap_or_else(|| panic!("no give-up message:\n{out}"));
    let moved_on = out
        .find(FIRMWARE_MOVED_ON)
        .unwrap_or_else(|| panic!("iPXE did not exit to the firmware:\n{out}"));
    assert!(gave_up < moved_on);
}

/// A loopback HTTP server that answers `GET <path>` from `files` until it
/// has served `count` requests (or 60 s passed); returns the request lines.
fn serve_files(
    files: Vec<(&'static str, Vec<u8>)>,
    count: usize,
) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < count && Instant::now() < deadline {
            let mut conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let path = line.split(' ').nth(1).unwrap_or("");
            let reply = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = conn.write_all(&reply);
            seen.push(line);
        }
        seen
    });
    (port, handle)
}

#[test]
fn install_script_loads_kernel_and_both_initrds_and_boots() {
    // The "kernel" is ipxe.lkrn itself (a bzImage): when the installer
    // script boots it, a second iPXE banner appears.
    require_tools();
    let kernel = std::fs::read(LKRN).unwrap();
    let (port, server) = serve_files(
        vec![
            ("/boot/vmlinuz", kernel),
            ("/boot/initrd.img", b"initrd".to_vec()),
            ("/boot/overlay.cpio.gz", b"overlay".to_vec()),
        ],
        3,
    );
    let script = ipxe::install_script(
        &templates(),
        &InstallParams {
            base_url: format!("http://10.0.2.2:{port}"),
            host: "pve-01".into(),
            iso_sha256: "ab".repeat(32),
            extra_kernel_args: vec![],
        },
    )
    .unwrap();
    let script = script.replacen("#!ipxe\n", "#!ipxe\ndhcp\n", 1);
    let out = run_ipxe(&script, true, FIRMWARE_MOVED_ON);
    let requests = server.join().unwrap();
    assert_eq!(
        requests,
        [
            "GET /boot/vmlinuz HTTP/1.1",
            "GET /boot/initrd.img HTTP/1.1",
            "GET /boot/overlay.cpio.gz HTTP/1.1",
        ],
        "console:\n{out}"
    );
    assert_eq!(
        out.matches("iPXE initialising devices").count(),
        2,
        "the downloaded kernel was not booted:\n{out}"
    );
    assert!(!out.contains("retrying"), "{out}");
}

#[test]
fn local_boot_script_tries_the_disk_then_exits() {
    // Under ipxe.lkrn ${platform} is pcbios: the unknown-firmware script must
    // take the BIOS branch; sanboot fails (no disk) and exit 1 reaches SeaBIOS.
    let script = ipxe::local_boot_script(&templates(), Firmware::Unknown).unwrap();
    let out = run_ipxe(&script, false, FIRMWARE_MOVED_ON);
    let san = out
        .find("Booting from SAN device 0x80")
        .unwrap_or_else(|| panic!("sanboot not tried:\n{out}"));
    let moved_on = out
        .find(FIRMWARE_MOVED_ON)
        .unwrap_or_else(|| panic!("iPXE did not exit to the firmware:\n{out}"));
    assert!(san < moved_on);
}

#[test]
fn entry_script_chains_with_mac_and_platform_and_yields_to_the_chained_exit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let local = ipxe::local_boot_script(&templates(), Firmware::Bios).unwrap();
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        listener.set_nonblocking(false).unwrap();
        // iPXE fetches the script once; a second request would be a retry.
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                break;
            };
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            requests.push(req.lines().next().unwrap_or("").to_owned());
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                local.len(),
                local
            );
            let _ = conn.write_all(reply.as_bytes());
            if requests.len() == 1 {
                // Give a (wrong) retry a chance to show up, then stop.
                let _ = listener.set_nonblocking(true);
                std::thread::sleep(Duration::from_secs(8));
            }
        }
        requests
    });
    let entry = ipxe::entry_script(&templates(), &format!("http://10.0.2.2:{port}")).unwrap();
    // In production iPXE has done DHCP before it runs the entry script.
    let script = entry.replacen("#!ipxe\n", "#!ipxe\ndhcp\n", 1);
    let out = run_ipxe(&script, true, FIRMWARE_MOVED_ON);
    let requests = server.join().unwrap();
    assert_eq!(
        requests,
        ["GET /ipxe/52-54-00-12-34-56?platform=pcbios HTTP/1.1"],
        "console:\n{out}"
    );
    assert!(out.contains("Booting from SAN device 0x80"), "{out}");
    assert!(out.contains(FIRMWARE_MOVED_ON), "{out}");
    assert!(
        !out.contains("fetching the boot script failed"),
        "the chained script's exit 1 was taken as a failed fetch:\n{out}"
    );
}
