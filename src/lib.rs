//! Provisioning: turns bare-metal machines into joined Proxmox VE cluster
//! nodes from host declarations committed to git. See ARCHITECTURE.md for the
//! code map.

pub mod boot;
pub mod check;
pub mod daemon;
pub mod dashboard;
pub mod decl;
pub mod join;
pub mod logging;
pub mod mac;
pub mod metrics;
pub mod reconcile;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod state;
pub mod status;
pub mod store;
pub mod systemd;
pub mod templates;
pub mod watch;
