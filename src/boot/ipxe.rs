//! iPXE scripts: the installer script for a host armed for a rebuild, the
//! local-boot script for every other MAC, and the generic entry script.
//!
//! Pure renderers over [`Templates`]; they never look at host state (the
//! `/ipxe/{mac}` handler decides which script a MAC gets) and never put an
//! unvalidated value into a script: every URL and kernel argument is checked
//! against iPXE's word syntax ([`check_ipxe_word`]) before rendering, and the
//! template engine refuses unfiltered values.
//!
//! # URL contract (served by the daemon, all `GET`, relative to `server.public_url`)
//!
//! | path | what |
//! |---|---|
//! | `/ipxe/{mac}?platform={pcbios\|efi}` | this MAC's script; `{mac}` with `:` or `-`, `platform` optional |
//! | `/boot/vmlinuz` | the installer kernel (the ISO's `/boot/linux26`) |
//! | `/boot/initrd.img` | the installer initrd, gzip (the ISO's `/boot/initrd.img` recompressed) |
//! | `/boot/overlay.cpio.gz` | the pxe-init overlay |
//! | `/boot/proxmox.iso` | the prepared ISO that `/pxe-init` downloads |
//!
//! dnsmasq points iPXE clients at [`chain_url`]:
//! `<base>/ipxe/${mac:hexhyp}?platform=${platform}`. iPXE expands both
//! settings, so the request arrives as `/ipxe/52-54-00-12-34-56?platform=efi`
//! (or `pcbios`), and the handler passes the value to [`Firmware::from_platform`]
//! to pick the right local-boot script.
//!
//! The installer kernel command line carries, besides the Proxmox arguments,
//! `rdinit=/pxe-init pxe.iso_url=<base>/boot/proxmox.iso pxe.iso_sha256=<hex>`
//! for `/pxe-init`.

use crate::templates::{TemplateError, Templates, UnsafeValue, check_ipxe_word};
use serde::Serialize;

/// Kernel arguments the Proxmox installer needs in automatic mode (the same
/// as `prepare-iso --pxe` writes), before ours.
pub const PROXMOX_KERNEL_ARGS: &[&str] = &[
    "ramdisk_size=16777216",
    "rw",
    "quiet",
    "splash=silent",
    "proxmox-start-auto-installer",
];

/// Paths of the boot assets under the base URL.
pub const KERNEL_PATH: &str = "/boot/vmlinuz";
pub const INITRD_PATH: &str = "/boot/initrd.img";
pub const OVERLAY_PATH: &str = "/boot/overlay.cpio.gz";
pub const ISO_PATH: &str = "/boot/proxmox.iso";

/// How often a script tries a download, and how long it waits in between.
const ATTEMPTS: u32 = 3;
const RETRY_DELAY_SECS: u32 = 5;

/// The firmware a machine's iPXE runs on, from iPXE's `${platform}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
    /// Not reported: the script asks iPXE itself.
    Unknown,
}

impl Firmware {
    /// Maps the `platform` query parameter (`pcbios`, `efi`) to a firmware;
    /// anything else, or nothing, is `Unknown`.
    pub fn from_platform(platform: Option<&str>) -> Firmware {
        match platform {
            Some("pcbios") => Firmware::Bios,
            Some("efi") => Firmware::Uefi,
            _ => Firmware::Unknown,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpxeError {
    #[error("base URL must start with http:// or https:// and be a single iPXE word: {0}")]
    BaseUrl(UnsafeValueOrScheme),
    #[error("ISO SHA-256 must be 64 hex digits")]
    IsoSha256,
    #[error("extra kernel argument {index} is not a single iPXE word: {source}")]
    KernelArg {
        index: usize,
        #[source]
        source: UnsafeValue,
    },
    #[error("host name is not a single iPXE word: {0}")]
    Host(#[source] UnsafeValue),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Why a base URL was rejected.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeValueOrScheme {
    #[error("scheme is not http or https")]
    Scheme,
    #[error(transparent)]
    Char(#[from] UnsafeValue),
}

/// What the installer script needs.
#[derive(Clone, Debug)]
pub struct InstallParams {
    /// Where the daemon is reachable from the machine, e.g.
    /// `http://10.0.0.1:8080` (a trailing `/` is ignored).
    pub base_url: String,
    /// The host name, shown on the console.
    pub host: String,
    /// SHA-256 of the prepared ISO, hex; `/pxe-init` verifies the download.
    pub iso_sha256: String,
    /// Appended to the kernel line, e.g. `console=ttyS0,115200n8`.
    pub extra_kernel_args: Vec<String>,
}

/// `<base>/ipxe/${mac:hexhyp}?platform=${platform}`: the URL dnsmasq gives iPXE
/// clients (`dhcp-boot`), and the entry script chains to.
pub fn chain_url(base_url: &str) -> Result<String, IpxeError> {
    let base = check_base_url(base_url)?;
    Ok(format!(
        "{base}/ipxe/${{mac:hexhyp}}?platform=${{platform}}"
    ))
}

/// The kernel command line after the `initrd=` names, in order.
pub fn kernel_args(p: &InstallParams) -> Result<Vec<String>, IpxeError> {
    let base = check_base_url(&p.base_url)?;
    let sha = p.iso_sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IpxeError::IsoSha256);
    }
    let mut args: Vec<String> = PROXMOX_KERNEL_ARGS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    args.push("rdinit=/pxe-init".to_owned());
    args.push(format!("pxe.iso_url={base}{ISO_PATH}"));
    args.push(format!("pxe.iso_sha256={sha}"));
    for (index, arg) in p.extra_kernel_args.iter().enumerate() {
        check_ipxe_word(arg).map_err(|source| IpxeError::KernelArg { index, source })?;
        args.push(arg.clone());
    }
    Ok(args)
}

/// The script for a host armed for a rebuild (BIOS and UEFI alike).
pub fn install_script(t: &Templates, p: &InstallParams) -> Result<String, IpxeError> {
    let base = check_base_url(&p.base_url)?;
    check_ipxe_word(&p.host).map_err(IpxeError::Host)?;
    let kernel_args = kernel_args(p)?;
    #[derive(Serialize)]
    struct Ctx<'a> {
        host: &'a str,
        kernel_url: String,
        initrd_url: String,
        overlay_url: String,
        kernel_args: Vec<String>,
        attempts: u32,
        retry_delay_secs: u32,
    }
    let ctx = Ctx {
        host: &p.host,
        kernel_url: format!("{base}{KERNEL_PATH}"),
        initrd_url: format!("{base}{INITRD_PATH}"),
        overlay_url: format!("{base}{OVERLAY_PATH}"),
        kernel_args,
        attempts: ATTEMPTS,
        retry_delay_secs: RETRY_DELAY_SECS,
    };
    Ok(t.render("ipxe-install.ipxe", ctx)?)
}

/// The script for every MAC that is not armed: boot the local disk.
pub fn local_boot_script(t: &Templates, firmware: Firmware) -> Result<String, IpxeError> {
    #[derive(Serialize)]
    struct Ctx {
        firmware: Firmware,
    }
    Ok(t.render("ipxe-local-boot.ipxe", Ctx { firmware })?)
}

/// A generic script (for a TFTP-served or embedded entry point) that chains
/// to [`chain_url`] with the client's MAC and platform.
pub fn entry_script(t: &Templates, base_url: &str) -> Result<String, IpxeError> {
    let base = check_base_url(base_url)?;
    #[derive(Serialize)]
    struct Ctx<'a> {
        base_url: &'a str,
        attempts: u32,
        retry_delay_secs: u32,
    }
    Ok(t.render(
        "ipxe-entry.ipxe",
        Ctx {
            base_url: base,
            attempts: ATTEMPTS,
            retry_delay_secs: RETRY_DELAY_SECS,
        },
    )?)
}

/// Validates a base URL and strips trailing slashes.
fn check_base_url(url: &str) -> Result<&str, IpxeError> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(IpxeError::BaseUrl(UnsafeValueOrScheme::Scheme))?;
    if rest.is_empty() {
        return Err(IpxeError::BaseUrl(UnsafeValueOrScheme::Scheme));
    }
    check_ipxe_word(url).map_err(|e| IpxeError::BaseUrl(e.into()))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> InstallParams {
        InstallParams {
            base_url: "http://10.0.0.1:8080/".to_owned(),
            host: "pve-01".to_owned(),
            iso_sha256: "AB".repeat(32),
            extra_kernel_args: vec!["console=ttyS0,115200n8".to_owned()],
        }
    }

    #[test]
    fn firmware_from_platform() {
        assert_eq!(Firmware::from_platform(Some("pcbios")), Firmware::Bios);
        assert_eq!(Firmware::from_platform(Some("efi")), Firmware::Uefi);
        assert_eq!(Firmware::from_platform(Some("EFI")), Firmware::Unknown);
        assert_eq!(Firmware::from_platform(None), Firmware::Unknown);
    }

    #[test]
    fn chain_url_shape() {
        assert_eq!(
            chain_url("http://10.0.0.1:8080/").unwrap(),
            "http://10.0.0.1:8080/ipxe/${mac:hexhyp}?platform=${platform}"
        );
    }

    #[test]
    fn kernel_args_in_order() {
        let args = kernel_args(&params()).unwrap();
        assert_eq!(
            args,
            [
                "ramdisk_size=16777216",
                "rw",
                "quiet",
                "splash=silent",
                "proxmox-start-auto-installer",
                "rdinit=/pxe-init",
                "pxe.iso_url=http://10.0.0.1:8080/boot/proxmox.iso",
                &format!("pxe.iso_sha256={}", "ab".repeat(32)),
                "console=ttyS0,115200n8",
            ]
        );
    }

    #[test]
    fn rejects_bad_params() {
        let t = Templates::new(None).unwrap();
        let check = |f: fn(&mut InstallParams), expect: &str| {
            let mut p = params();
            f(&mut p);
            let err = install_script(&t, &p).unwrap_err().to_string();
            assert!(err.contains(expect), "{err:?} should contain {expect:?}");
        };
        check(|p| p.base_url = "ftp://x".into(), "scheme");
        check(|p| p.base_url = "http://".into(), "scheme");
        check(|p| p.base_url = "http://x/${net0/ip}".into(), "'$'");
        check(|p| p.base_url = "http://x y".into(), "' '");
        check(|p| p.iso_sha256 = "abc".into(), "64 hex");
        check(|p| p.iso_sha256 = "g".repeat(64), "64 hex");
        check(
            |p| p.extra_kernel_args = vec!["ok".into(), "a || shell".into()],
            "argument 1",
        );
        check(|p| p.host = "a b".into(), "host name");
    }
}
