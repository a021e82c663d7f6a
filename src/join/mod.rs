//! Joining an installed host to the Proxmox cluster over SSH and registering
//! it with the Infrastructure service.

pub mod driver;
pub mod infra;
pub mod retry;
pub mod ssh;
