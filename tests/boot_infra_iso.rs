//! ISO preparation and boot-file extraction against real ISO images built
//! with xorriso in a temporary directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use provisioning::boot::iso::{self, InitrdFormat, ModeParams};

const UUID: &str = "2025011512300000";

fn require(tool: &str, version_flag: &str) {
    let ok = Command::new(tool)
        .arg(version_flag)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs `{tool}` in PATH (Debian package {tool})"
    );
}

fn fake_initrd_cpio() -> Vec<u8> {
    let mut out = Vec::new();
    let w = cpio::newc::Builder::new("init")
        .mode(0o100755)
        .write(&mut out, 10);
    let mut w = w;
    std::io::Write::write_all(&mut w, b"#!/bin/sh\n").unwrap();
    w.finish().unwrap();
    cpio::newc::trailer(&mut out).unwrap();
    out
}

enum InitrdKind {
    Zstd,
    Gzip,
}

/// A small Proxmox-like ISO: `/.pve-cd-id.txt`, `/boot/linux26`,
/// `/boot/initrd.img` and an El Torito boot image, with a fixed volume
/// UUID.
fn build_iso(dir: &Path, kind: InitrdKind) -> PathBuf {
    require("xorriso", "-version");
    require("zstd", "--version");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("boot")).unwrap();
    std::fs::write(src.join(".pve-cd-id.txt"), "test-cd-id\n").unwrap();
    std::fs::write(src.join("boot/linux26"), b"fake kernel bytes\n").unwrap();
    std::fs::write(src.join("boot/eltorito.img"), vec![0u8; 2048]).unwrap();
    let raw = dir.join("initrd.cpio");
    std::fs::write(&raw, fake_initrd_cpio()).unwrap();
    let compressed = src.join("boot/initrd.img");
    let status = match kind {
        InitrdKind::Zstd => Command::new("zstd")
            .args(["-q", "-19", "-o"])
            .arg(&compressed)
            .arg(&raw)
            .status()
            .unwrap(),
        InitrdKind::Gzip => Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -9 -c '{}' > '{}'",
                raw.display(),
                compressed.display()
            ))
            .status()
            .unwrap(),
    };
    assert!(status.success());
    let iso = dir.join("proxmox-ve.iso");
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-o"])
        .arg(&iso)
        .args([
            "-V",
            "PVE",
            "-r",
            &format!("--modification-date={UUID}"),
            "-b",
            "boot/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso mkisofs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

fn extract_file(iso: &Path, inside: &str, to: &Path) -> Vec<u8> {
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", inside])
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso extract {inside}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(to).unwrap()
}

fn boot_report(iso: &Path) -> String {
    let out = Command::new("xorriso")
        .arg("-dev")
        .arg(iso)
        .args(["-report_el_torito", "cmd"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-boot_image"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn params(fp: bool, token: bool) -> ModeParams {
    ModeParams {
        url: "http://provisioning.lan:8080/api/boot/answer".into(),
        cert_fingerprint: fp.then(|| {
            (0..32)
                .map(|i| format!("{:02X}", i * 7))
                .collect::<Vec<_>>()
                .join(":")
        }),
        token: token.then(|| "provisioning:not-a-real-token".into()),
    }
}

#[test]
fn prepare_bakes_the_mode_file_and_keeps_uuid_and_boot_image() {
    let dir = tempfile::tempdir().unwrap();
    let input = build_iso(dir.path(), InitrdKind::Zstd);
    let before = std::fs::read(&input).unwrap();
    assert_eq!(iso::volume_uuid(&input).unwrap(), UUID);
    let boot_before = boot_report(&input);
    assert!(
        boot_before.contains("bin_path='/boot/eltorito.img'"),
        "{boot_before}"
    );

    let output = dir.path().join("prepared.iso");
    let prepared = iso::prepare(&input, &output, &params(true, false)).unwrap();
    assert_eq!(prepared.volume_uuid, UUID);
    let sha = Command::new("sha256sum").arg(&output).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(prepared.sha256, sha.split_whitespace().next().unwrap());
    assert_eq!(iso::sha256_file(&output).unwrap(), prepared.sha256);

    let toml = extract_file(
        &output,
        "/auto-installer-mode.toml",
        &dir.path().join("mode.toml"),
    );
    insta::assert_snapshot!(
        "auto_installer_mode_with_fingerprint",
        String::from_utf8(toml).unwrap()
    );
    assert_eq!(iso::volume_uuid(&output).unwrap(), UUID, "volume uuid kept");
    assert_eq!(boot_report(&output), boot_before, "boot equipment kept");
    assert_eq!(
        extract_file(&output, "/.pve-cd-id.txt", &dir.path().join("id.txt")),
        b"test-cd-id\n"
    );
    assert_eq!(std::fs::read(&input).unwrap(), before, "input untouched");
    // Nothing but our files is left in the directory.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "id.txt",
            "initrd.cpio",
            "mode.toml",
            "prepared.iso",
            "proxmox-ve.iso",
            "src"
        ]
    );
}

#[test]
fn prepare_minimal_and_with_token() {
    let dir = tempfile::tempdir().unwrap();
    let input = build_iso(dir.path(), InitrdKind::Zstd);

    let plain = dir.path().join("plain.iso");
    iso::prepare(&input, &plain, &params(false, false)).unwrap();
    let toml = extract_file(
        &plain,
        "/auto-installer-mode.toml",
        &dir.path().join("a.toml"),
    );
    insta::assert_snapshot!(
        "auto_installer_mode_minimal",
        String::from_utf8(toml).unwrap()
    );

    // The token is a secret, so it is checked here rather than snapshotted.
    let with_token = dir.path().join("token.iso");
    iso::prepare(&input, &with_token, &params(false, true)).unwrap();
    let toml = extract_file(
        &with_token,
        "/auto-installer-mode.toml",
        &dir.path().join("b.toml"),
    );
    let value: toml::Table = toml::from_str(std::str::from_utf8(&toml).unwrap()).unwrap();
    assert_eq!(value["mode"].as_str(), Some("http"));
    assert_eq!(
        value["http"]["token"].as_str(),
        Some("provisioning:not-a-real-token")
    );
    assert!(value["http"].get("cert_fingerprint").is_none());

    // Preparing over an existing output replaces it.
    iso::prepare(&input, &with_token, &params(false, false)).unwrap();
    let toml = extract_file(
        &with_token,
        "/auto-installer-mode.toml",
        &dir.path().join("c.toml"),
    );
    assert!(!String::from_utf8(toml).unwrap().contains("token"));
}

#[test]
fn prepare_refuses_what_is_not_an_iso() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.iso");
    std::fs::write(&bogus, vec![0u8; 4096]).unwrap();
    let out = dir.path().join("out.iso");
    let err = iso::prepare(&bogus, &out, &params(false, false)).unwrap_err();
    assert!(!out.exists());
    let msg = err.to_string();
    assert!(
        msg.contains("xorriso") || msg.contains("volume_date"),
        "{msg}"
    );
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn extract_boot_recompresses_a_zstd_initrd_to_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let input = build_iso(dir.path(), InitrdKind::Zstd);
    let out = dir.path().join("boot");
    let files = iso::extract_boot(&input, &out).unwrap();
    assert_eq!(files.source_format, InitrdFormat::Zstd);
    assert_eq!(files.kernel, out.join("vmlinuz"));
    assert_eq!(files.initrd, out.join("initrd.img"));
    assert_eq!(
        std::fs::read(&files.kernel).unwrap(),
        b"fake kernel bytes\n"
    );
    let initrd = std::fs::read(&files.initrd).unwrap();
    assert_eq!(&initrd[..2], &[0x1f, 0x8b], "gzip magic");
    assert_eq!(gunzip(&files.initrd), fake_initrd_cpio());
    // The system gzip agrees it is valid gzip.
    let st = Command::new("gzip")
        .arg("-t")
        .arg(&files.initrd)
        .status()
        .unwrap();
    assert!(st.success());
    // Extracting again overwrites cleanly and leaves no work directory.
    iso::extract_boot(&input, &out).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["initrd.img", "vmlinuz"]);
}

#[test]
fn extract_boot_keeps_a_gzip_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let input = build_iso(dir.path(), InitrdKind::Gzip);
    let original = extract_file(&input, "/boot/initrd.img", &dir.path().join("orig.img"));
    let files = iso::extract_boot(&input, &dir.path().join("boot")).unwrap();
    assert_eq!(files.source_format, InitrdFormat::Gzip);
    assert_eq!(std::fs::read(&files.initrd).unwrap(), original);
}
