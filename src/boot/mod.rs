//! The boot flow's artefacts and machine-facing protocols: iPXE scripts,
//! answer files, the first-boot script, dnsmasq configuration and
//! supervision, the pxe-init overlay, ISO preparation and Wake-on-LAN.
//!
//! Everything here is a pure renderer/parser or a small I/O helper with its
//! own parameter struct; none of it touches the store or host state (the
//! HTTP handlers in `server` do that through the state machine).

pub mod answer;
pub mod dnsmasq;
pub mod firstboot;
pub mod ipxe;
pub mod iso;
pub mod overlay;
pub mod sysinfo;
pub mod wol;
