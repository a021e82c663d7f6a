//! The per-scenario, per-phase timing table. Phases come from the daemon's own
//! history (`GET /api/hosts/{name}`: transitions with `at_ms`) and the harness's
//! power-on time: PXE = power-on → `pxe_booted`, installer = `pxe_booted` →
//! `installed`, reboot = `installed` → `first_boot`, join = `first_boot` → `ready`.
//! It is printed straight to the terminal (not captured by libtest) and written to
//! vm-tests/work/timings.txt.

use serde_json::Value;
use std::io::Write;
use std::time::Duration;

pub struct Row {
    pub scenario: String,
    pub machine: String,
    pub phases: [Option<f64>; 5],
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub results: Vec<(String, Result<(), String>, Duration)>,
    /// Workarounds the harness applied (missing daemon features).
    pub notes: Vec<String>,
}

/// The first transition into `state` at or after `after_ms`.
fn entered(history: &[Value], state: &str, after_ms: i64) -> Option<i64> {
    history
        .iter()
        .filter(|t| t["to"] == state)
        .filter_map(|t| t["at_ms"].as_i64())
        .filter(|&at| at >= after_ms)
        .min()
}

impl Report {
    pub fn add(&mut self, scenario: &str, machine: &str, powered_on_ms: i64, detail: &Value) {
        let empty = Vec::new();
        let h = detail["history"].as_array().unwrap_or(&empty);
        let pxe = entered(h, "pxe_booted", powered_on_ms);
        let inst = pxe.and_then(|t| entered(h, "installed", t));
        let fb = inst.and_then(|t| entered(h, "first_boot", t));
        let ready = fb.and_then(|t| entered(h, "ready", t));
        let d = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some((b - a) as f64 / 1000.0),
            _ => None,
        };
        let on = Some(powered_on_ms);
        self.rows.push(Row {
            scenario: scenario.to_string(),
            machine: machine.to_string(),
            phases: [
                d(on, pxe),
                d(pxe, inst),
                d(inst, fb),
                d(fb, ready),
                d(on, ready),
            ],
        });
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "\n{:<26} {:<10} {:>7} {:>10} {:>8} {:>7} {:>8}\n",
            "scenario", "machine", "PXE", "installer", "reboot", "join", "total"
        ));
        for r in &self.rows {
            let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{:<26} {:<10} {:>7} {:>10} {:>8} {:>7} {:>8}\n",
                r.scenario,
                r.machine,
                f(r.phases[0]),
                f(r.phases[1]),
                f(r.phases[2]),
                f(r.phases[3]),
                f(r.phases[4])
            ));
        }
        s.push_str("(seconds; PXE = power-on to pxe_booted, installer = to installed, reboot = to first_boot, join = to ready; QEMU TCG)\n\n");
        let mut total = Duration::ZERO;
        for (name, res, took) in &self.results {
            total += *took;
            match res {
                Ok(()) => s.push_str(&format!("PASS {name} ({:.0} s)\n", took.as_secs_f64())),
                Err(e) => s.push_str(&format!(
                    "FAIL {name} ({:.0} s): {}\n",
                    took.as_secs_f64(),
                    e.lines().next().unwrap_or("")
                )),
            }
        }
        s.push_str(&format!("total {:.0} s\n", total.as_secs_f64()));
        for n in &self.notes {
            s.push_str(&format!("{n}\n"));
        }
        s
    }

    pub fn print(&self, path: &std::path::Path) {
        let text = self.render();
        let _ = std::fs::write(path, &text);
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}
