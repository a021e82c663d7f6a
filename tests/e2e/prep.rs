//! Builds (or reuses) everything the machines boot, by running vm-tests/prepare.sh
//! once per test process, and checks the prerequisites that prepare.sh cannot: root.
//! It never skips: a missing prerequisite is a panic that names it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub struct Artefacts {
    pub vm_tests: PathBuf,
    pub work: PathBuf,
    pub kernel: PathBuf,
    pub installer_initrd: PathBuf,
    pub iso: PathBuf,
    pub disk_mib: u64,
    pub standin: PathBuf,
    pub mock_infra: PathBuf,
    pub observer_key: PathBuf,
    /// vm-tests/standin/join.conf: EXPECTED_NODE, EXPECTED_FINGERPRINT, EXPECTED_PASSWORD
    pub join: HashMap<String, String>,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn artefacts() -> &'static Artefacts {
    static A: OnceLock<Artefacts> = OnceLock::new();
    A.get_or_init(|| {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the end-to-end tests need root (network namespaces, taps, QEMU): run them as root"
        );
        let vm_tests = repo().join("vm-tests");
        let out = Command::new("bash")
            .arg(vm_tests.join("prepare.sh"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run vm-tests/prepare.sh: {e}"));
        assert!(
            out.status.success(),
            "vm-tests/prepare.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kv: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| -> PathBuf {
            PathBuf::from(
                kv.get(k)
                    .unwrap_or_else(|| panic!("prepare.sh printed no {k}")),
            )
        };
        let join_conf = std::fs::read_to_string(get("JOIN_CONF")).expect("join.conf");
        let join = join_conf
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Artefacts {
            vm_tests,
            work: get("WORK"),
            kernel: get("KERNEL"),
            installer_initrd: get("INSTALLER_INITRD"),
            iso: get("ISO"),
            disk_mib: kv
                .get("DISK_MIB")
                .and_then(|v| v.parse().ok())
                .expect("DISK_MIB"),
            standin: get("STANDIN"),
            mock_infra: get("MOCK_INFRA"),
            observer_key: get("OBSERVER_KEY"),
            join,
        }
    })
}
