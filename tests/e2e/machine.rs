//! One QEMU machine (vm-tests/lib/qemu.sh): BIOS or UEFI, network first then its disk,
//! TCG, serial console to a file per power-on. Power-off kills QEMU; Drop powers off.
//! Also the observer's view of the machine: its serial log, its disk image, and SSH
//! with the harness's observer key (an operator key baked into the stand-in system).

use super::net::Net;
use super::prep::artefacts;
use super::{tail, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Efi,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Efi => "efi",
        }
    }
}

pub struct Machine {
    pub name: String,
    pub firmware: Firmware,
    pub mac: String,
    pub uuid: String,
    pub tap: String,
    pub disk: PathBuf,
    ns: String,
    dir: PathBuf,
    child: Option<Child>,
    boots: u32,
    /// Wall-clock ms of the last power-on.
    pub powered_on_ms: i64,
    pub powered_on: Option<Instant>,
    /// Extra `-fw_cfg name=opt/standin/<k>,string=<v>` for the stand-in installer.
    pub fw_cfg: Vec<(String, String)>,
}

impl Machine {
    /// `index` makes the MAC unique within the run: 52:54:00:e2:00:<index>.
    pub fn new(net: &mut Net, name: &str, firmware: Firmware, index: u8) -> Machine {
        let tap = net.add_tap();
        let uuid = format!("5e0c0de0-0000-4000-8000-0000000000{index:02x}");
        Machine {
            name: name.to_string(),
            firmware,
            mac: format!("52:54:00:e2:00:{index:02x}"),
            uuid,
            tap,
            disk: net.dir.join(format!("{name}.raw")),
            ns: net.ns.clone(),
            dir: net.dir.clone(),
            child: None,
            boots: 0,
            powered_on_ms: 0,
            powered_on: None,
            fw_cfg: Vec::new(),
        }
    }

    pub fn serial_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.boot{}.serial", self.name, self.boots))
    }

    pub fn power_on(&mut self) {
        assert!(self.child.is_none(), "{} is already on", self.name);
        self.boots += 1;
        let a = artefacts();
        let mut cmd = Command::new("bash");
        cmd.arg(a.vm_tests.join("lib/qemu.sh"))
            .arg(&self.ns)
            .arg(&self.name)
            .arg(self.firmware.as_str())
            .arg(&self.mac)
            .arg(&self.tap)
            .arg(&self.disk)
            .arg(a.disk_mib.to_string())
            .arg(&self.dir)
            .arg(&self.uuid)
            .env("QEMU_SERIAL", self.serial_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!("{}.qemu.log", self.name)))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
        for (k, v) in &self.fw_cfg {
            cmd.arg("-fw_cfg")
                .arg(format!("name=opt/standin/{k},string={v}"));
        }
        self.powered_on_ms = super::now_ms();
        self.powered_on = Some(Instant::now());
        self.child = Some(cmd.spawn().expect("start qemu.sh"));
    }

    pub fn power_off(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The serial output of the current (or last) power-on.
    pub fn serial(&self) -> String {
        std::fs::read(self.serial_path())
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .unwrap_or_default()
    }

    /// All serial output of every power-on so far.
    pub fn all_serial(&self) -> String {
        (1..=self.boots)
            .map(|b| {
                std::fs::read(self.dir.join(format!("{}.boot{b}.serial", self.name)))
                    .map(|x| String::from_utf8_lossy(&x).to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn context(&self) -> String {
        tail(&self.serial_path(), 40)
    }

    /// Waits for `marker` on the serial console of the current power-on.
    pub fn wait_serial(&self, marker: &str, timeout: Duration) {
        wait_for(
            &format!("{}: '{marker}' on the serial console", self.name),
            timeout,
            || self.serial().contains(marker).then_some(()),
            || self.context(),
        )
    }

    /// The installed system's address, as it printed it.
    pub fn installed_ip(&self) -> Option<String> {
        let s = self.serial();
        let line = s
            .lines()
            .rev()
            .find(|l| l.contains("standin-installed: address "))?;
        let addr = line.split("address ").nth(1)?.split_whitespace().next()?;
        let ip = addr.split('/').next()?;
        (ip != "none").then(|| ip.to_string())
    }

    /// Runs `cmd` on the installed system as root with the observer key.
    pub fn observe(&self, net: &Net, cmd: &str) -> Output {
        let ip = self.installed_ip().unwrap_or_else(|| {
            panic!(
                "{}: no address on the serial console\n{}",
                self.name,
                self.context()
            )
        });
        let kh = self.dir.join(format!("{}.observer_known_hosts", self.name));
        let _ = std::fs::remove_file(&kh);
        net.exec("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "ConnectTimeout=15",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", kh.display()))
            .arg("-i")
            .arg(&artefacts().observer_key)
            .arg(format!("root@{ip}"))
            .arg(cmd)
            .output()
            .expect("ssh")
    }

    pub fn observe_ok(&self, net: &Net, cmd: &str) -> String {
        let out = self.observe(net, cmd);
        assert!(
            out.status.success(),
            "{}: `{cmd}` over SSH failed: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            self.context()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The disk image's bytes' SHA-256 (hex), or None when there is no disk yet.
    pub fn disk_digest(&self) -> Option<String> {
        let out = Command::new("sha256sum").arg(&self.disk).output().ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.power_off();
    }
}
