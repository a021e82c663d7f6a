//! Test helpers shared by several integration test binaries.

pub mod sshd;
