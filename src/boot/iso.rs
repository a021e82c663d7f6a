//! The Proxmox installer ISO: baking the answer URL into it the way
//! `proxmox-auto-install-assistant prepare-iso --fetch-from http` does, and
//! extracting the installer kernel and a gzip initrd that iPXE can load.
//!
//! All ISO 9660 work goes through the `xorriso` binary (a real ISO tool);
//! this module never writes ISO structures itself and never modifies its
//! input ISO. Outputs appear atomically (built under a temporary name, then
//! renamed). The answer token is a secret: it is written into the ISO and
//! nowhere else (not into errors, logs or Debug output).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// The xorriso binary, looked up in `PATH`.
pub const XORRISO: &str = "xorriso";
/// The zstd binary, looked up in `PATH`.
pub const ZSTD: &str = "zstd";

/// Where the installer looks for its mode file on the ISO.
pub const MODE_FILE_ISO_PATH: &str = "/auto-installer-mode.toml";

/// What to bake into the ISO.
#[derive(Clone)]
pub struct ModeParams {
    /// The answer URL, `http://` or `https://`.
    pub url: String,
    /// SHA-256 fingerprint of the answer server's certificate, as the
    /// installer expects it (32 `:`-separated hex pairs).
    pub cert_fingerprint: Option<String>,
    /// The 9.2 answer token (`Authorization: Bearer`), a secret.
    pub token: Option<String>,
}

impl fmt::Debug for ModeParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModeParams")
            .field("url", &self.url)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The wire form of `/auto-installer-mode.toml` (pve-installer 9.2.7
/// `AutoInstSettings`: snake_case keys, unset options omitted).
#[derive(Serialize)]
struct AutoInstSettings<'a> {
    mode: FetchAnswerFrom,
    partition_label: &'a str,
    http: HttpOptions<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum FetchAnswerFrom {
    Http,
}

#[derive(Serialize)]
struct HttpOptions<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

/// The installer's default partition label, written explicitly as
/// prepare-iso does.
const DEFAULT_PARTITION_LABEL: &str = "proxmox-ais";

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("invalid answer url {0:?}: expected http:// or https:// without whitespace")]
    InvalidUrl(String),
    #[error(
        "invalid certificate fingerprint {0:?}: expected a SHA-256 as 32 ':'-separated hex pairs"
    )]
    InvalidFingerprint(String),
    #[error("invalid answer token: expected 1 to 256 printable ASCII characters without spaces")]
    InvalidToken,
    #[error("cannot serialize the auto-installer mode file")]
    Serialize(#[source] toml::ser::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {program}: {source} (is it installed?)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    ToolFailed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error(
        "{0}: no `-volume_date uuid` in xorriso's system area report; is this a Proxmox installer ISO?"
    )]
    NoVolumeUuid(PathBuf),
    #[error(
        "{path}: unsupported initrd compression (magic {magic}); expected zstd, gzip or plain cpio"
    )]
    UnsupportedInitrd { path: PathBuf, magic: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IsoError + '_ {
    move |source| IsoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn valid_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic())
}

fn valid_fingerprint(fp: &str) -> bool {
    let parts: Vec<&str> = fp.split(':').collect();
    parts.len() == 32
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 256 && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The text of `/auto-installer-mode.toml` for `params`, validated.
pub fn mode_file(params: &ModeParams) -> Result<String, IsoError> {
    if !valid_url(&params.url) {
        return Err(IsoError::InvalidUrl(params.url.chars().take(80).collect()));
    }
    if let Some(fp) = &params.cert_fingerprint
        && !valid_fingerprint(fp)
    {
        return Err(IsoError::InvalidFingerprint(fp.chars().take(120).collect()));
    }
    if let Some(token) = &params.token
        && !valid_token(token)
    {
        return Err(IsoError::InvalidToken);
    }
    let settings = AutoInstSettings {
        mode: FetchAnswerFrom::Http,
        partition_label: DEFAULT_PARTITION_LABEL,
        http: HttpOptions {
            url: Some(&params.url),
            cert_fingerprint: params.cert_fingerprint.as_deref(),
            token: params.token.as_deref(),
        },
    };
    toml::to_string(&settings).map_err(IsoError::Serialize)
}

/// Runs a tool, returning its stdout; a failure carries the tail of its
/// stderr.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, IsoError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IsoError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        return Err(IsoError::ToolFailed {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    Ok(out.stdout)
}

/// The volume "uuid" (ISO modification time stamp, 16 digits) of `iso`, read
/// from xorriso's system area report as prepare-iso does.
pub fn volume_uuid(iso: &Path) -> Result<String, IsoError> {
    let out = run(
        XORRISO,
        &[
            "-dev".as_ref(),
            iso.as_os_str(),
            "-report_system_area".as_ref(),
            "cmd".as_ref(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out);
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("-volume_date uuid ") {
            let uuid = rest.trim().trim_matches('\'');
            if uuid.len() == 16 && uuid.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(uuid.to_owned());
            }
        }
    }
    Err(IsoError::NoVolumeUuid(iso.to_owned()))
}

/// A temporary sibling of `path` (same directory, so a rename is atomic).
fn temp_sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}{}", std::process::id()))
}

/// Removes a temporary file on drop unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
    }
}

/// What [`prepare`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedIso {
    /// The volume UUID, kept from the source ISO.
    pub volume_uuid: String,
    /// SHA-256 of the prepared ISO, lower-case hex (what `/pxe-init` checks
    /// through `pxe.iso_sha256=`).
    pub sha256: String,
}

/// SHA-256 of a file, lower-case hex, read in chunks (never whole into
/// memory).
pub fn sha256_file(path: &Path) -> Result<String, IsoError> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `out_iso`: a copy of `in_iso` with `/auto-installer-mode.toml`
/// for `params`, keeping the source's volume UUID and boot equipment.
pub fn prepare(
    in_iso: &Path,
    out_iso: &Path,
    params: &ModeParams,
) -> Result<PreparedIso, IsoError> {
    let toml = mode_file(params)?;
    let uuid = volume_uuid(in_iso)?;

    let tmp_iso = temp_sibling(out_iso, "prepare");
    let mut iso_guard = TempGuard(Some(tmp_iso.clone()));
    let tmp_toml = temp_sibling(out_iso, "mode-toml");
    let _toml_guard = TempGuard(Some(tmp_toml.clone()));

    std::fs::copy(in_iso, &tmp_iso).map_err(io_err(in_iso))?;
    write_private(&tmp_toml, toml.as_bytes())?;
    run(
        XORRISO,
        &[
            "-boot_image".as_ref(),
            "any".as_ref(),
            "keep".as_ref(),
            "-volume_date".as_ref(),
            "uuid".as_ref(),
            uuid.as_ref(),
            "-dev".as_ref(),
            tmp_iso.as_os_str(),
            "-map".as_ref(),
            tmp_toml.as_os_str(),
            MODE_FILE_ISO_PATH.as_ref(),
        ],
    )?;
    let sha256 = sha256_file(&tmp_iso)?;
    std::fs::rename(&tmp_iso, out_iso).map_err(io_err(out_iso))?;
    iso_guard.0 = None;
    tracing::info!(iso = %out_iso.display(), volume_uuid = %uuid, sha256 = %sha256, "prepared installer iso");
    Ok(PreparedIso {
        volume_uuid: uuid,
        sha256,
    })
}

/// Creates `path` readable by its owner only (it may hold the token).
fn write_private(path: &Path, data: &[u8]) -> Result<(), IsoError> {
    use std::os::unix::fs::OpenOptionsExt;
    // A leftover from a crashed run with the same pid would block
    // `create_new`.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))
}

/// How the ISO's initrd was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitrdFormat {
    Zstd,
    Gzip,
    Cpio,
}

/// What [`extract_boot`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// `<out_dir>/vmlinuz`, from `/boot/linux26`.
    pub kernel: PathBuf,
    /// `<out_dir>/initrd.img`, always gzip.
    pub initrd: PathBuf,
    /// The compression the ISO's initrd had.
    pub source_format: InitrdFormat,
}

/// Extracts the installer kernel (`/boot/linux26` → `vmlinuz`) and initrd
/// (`/boot/initrd.img` → `initrd.img`, re-compressed from zstd to gzip,
/// which iPXE can load) into `out_dir`.
pub fn extract_boot(iso: &Path, out_dir: &Path) -> Result<BootFiles, IsoError> {
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let work = out_dir.join(format!(".extract{}", std::process::id()));
    let _work_guard = TempGuard(Some(work.clone()));
    std::fs::create_dir(&work).map_err(io_err(&work))?;
    let raw_kernel = work.join("linux26");
    let raw_initrd = work.join("initrd.img");
    run(
        XORRISO,
        &[
            "-osirrox".as_ref(),
            "on".as_ref(),
            "-indev".as_ref(),
            iso.as_os_str(),
            "-extract".as_ref(),
            "/boot/linux26".as_ref(),
            raw_kernel.as_os_str(),
            "-extract".as_ref(),
            "/boot/initrd.img".as_ref(),
            raw_initrd.as_os_str(),
        ],
    )?;

    let initrd_gz = work.join("initrd.img.gz");
    let source_format = recompress_initrd(&raw_initrd, &initrd_gz)?;

    let kernel = out_dir.join("vmlinuz");
    let initrd = out_dir.join("initrd.img");
    // xorriso gives extracted files the ISO's read-only modes.
    set_mode(&raw_kernel, 0o644)?;
    set_mode(&initrd_gz, 0o644)?;
    std::fs::rename(&raw_kernel, &kernel).map_err(io_err(&kernel))?;
    std::fs::rename(&initrd_gz, &initrd).map_err(io_err(&initrd))?;
    tracing::info!(iso = %iso.display(), dir = %out_dir.display(), initrd_was = ?source_format, "extracted installer kernel and initrd");
    Ok(BootFiles {
        kernel,
        initrd,
        source_format,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), IsoError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const CPIO_NEWC_MAGIC: &[u8; 6] = b"070701";

fn recompress_initrd(src: &Path, dst: &Path) -> Result<InitrdFormat, IsoError> {
    let mut head = [0u8; 6];
    let n = {
        let mut f = std::fs::File::open(src).map_err(io_err(src))?;
        read_up_to(&mut f, &mut head).map_err(io_err(src))?
    };
    let head = &head[..n];
    if head.starts_with(&GZIP_MAGIC) {
        std::fs::copy(src, dst).map_err(io_err(dst))?;
        Ok(InitrdFormat::Gzip)
    } else if head.starts_with(&ZSTD_MAGIC) {
        let mut child = Command::new(ZSTD)
            .args(["-d", "-c", "-q"])
            .arg(src)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| IsoError::Spawn {
                program: ZSTD.to_owned(),
                source,
            })?;
        let copied = match child.stdout.take() {
            Some(stdout) => gzip_stream(stdout, dst),
            None => Err(io::Error::other("zstd stdout missing")),
        };
        let out = child.wait_with_output().map_err(|source| IsoError::Spawn {
            program: ZSTD.to_owned(),
            source,
        })?;
        if !out.status.success() {
            return Err(IsoError::ToolFailed {
                program: ZSTD.to_owned(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        copied.map_err(io_err(dst))?;
        Ok(InitrdFormat::Zstd)
    } else if head.starts_with(CPIO_NEWC_MAGIC) {
        let f = std::fs::File::open(src).map_err(io_err(src))?;
        gzip_stream(f, dst).map_err(io_err(dst))?;
        Ok(InitrdFormat::Cpio)
    } else {
        Err(IsoError::UnsupportedInitrd {
            path: src.to_owned(),
            magic: hex::encode(head),
        })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn gzip_stream(mut from: impl Read, dst: &Path) -> io::Result<()> {
    let file = std::fs::File::create(dst)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(io::BufWriter::new(file), flate2::Compression::new(6));
    io::copy(&mut from, &mut gz)?;
    gz.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ModeParams {
        ModeParams {
            url: "http://provisioning.lan:8080/api/boot/answer".into(),
            cert_fingerprint: None,
            token: None,
        }
    }

    #[test]
    fn mode_file_minimal() {
        assert_eq!(
            mode_file(&params()).unwrap(),
            "mode = \"http\"\npartition_label = \"proxmox-ais\"\n\n[http]\nurl = \"http://provisioning.lan:8080/api/boot/answer\"\n"
        );
    }

    #[test]
    fn mode_file_rejects_bad_input() {
        let mut p = params();
        p.url = "ftp://x/".into();
        assert!(matches!(mode_file(&p), Err(IsoError::InvalidUrl(_))));
        p.url = "http://x/a b".into();
        assert!(matches!(mode_file(&p), Err(IsoError::InvalidUrl(_))));
        let mut p = params();
        p.cert_fingerprint = Some("AB:CD".into());
        assert!(matches!(
            mode_file(&p),
            Err(IsoError::InvalidFingerprint(_))
        ));
        let mut p = params();
        p.token = Some("a b\n".into());
        let err = mode_file(&p).unwrap_err();
        assert!(matches!(err, IsoError::InvalidToken));
        assert!(!err.to_string().contains("a b"));
    }

    #[test]
    fn debug_redacts_the_token() {
        let mut p = params();
        p.token = Some("prov:s3cret-token".into());
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }
}
