//! `standin`: the parts of the stand-in Proxmox installer that shell cannot do
//! faithfully. It runs inside the QEMU guests (statically linked) and is called by the
//! installer's `/init` (vm-tests/standin/installer-init). It builds the schema-1.0
//! system information from /sys, POSTs it to the answer URL, verifies the answer with
//! the installer's rules (src/answer.rs), fetches the first-boot script, and sends the
//! schema-1.2 post-installation webhook. It never retries and never follows
//! redirects, like the real installer.

mod answer;
mod http;

use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_FIRST_BOOT: usize = 1024 * 1024;

fn usage() -> String {
    "usage:\n  standin sysinfo\n  standin fetch-answer <url> <outdir>\n  standin check-answer <file> <outdir>\n  standin mode-url <auto-installer-mode.toml>\n  standin get <url> <out>\n  standin post-json <url> <file>\n  standin webhook <url> <fqdn> <boot-mode> <ed25519-pub-file> <mgmt-if> <mgmt-cidr> <machine-id> <reboot-mode>".into()
}

/// A URL for log lines: the last path segment of a callback URL is its token.
pub(crate) fn redact(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, tail)) if tail.len() >= 16 && head.matches('/').count() > 3 => {
            format!("{head}/<redacted>")
        }
        _ => url.to_string(),
    }
}

fn read_sys(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn dmi(f: &str) -> String {
    read_sys(&format!("/sys/class/dmi/id/{f}"))
}

/// Physical NICs (those with a backing device), sorted by name, as (name, mac).
fn nics() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !Path::new(&format!("/sys/class/net/{name}/device")).exists() {
                continue;
            }
            out.push((
                name.clone(),
                read_sys(&format!("/sys/class/net/{name}/address")),
            ));
        }
    }
    out.sort();
    out
}

fn dmi_json(uuid_lowercase: bool) -> Value {
    let uuid = dmi("product_uuid");
    let uuid = if uuid_lowercase {
        uuid.to_lowercase()
    } else {
        uuid
    };
    json!({
        "system": {"name": dmi("product_name"), "serial": dmi("product_serial"), "sku": dmi("product_sku"), "uuid": uuid},
        "baseboard": {"name": dmi("board_name"), "serial": dmi("board_serial"), "asset_tag": dmi("board_asset_tag")},
        "chassis": {"serial": dmi("chassis_serial"), "sku": dmi("chassis_sku"), "asset_tag": dmi("chassis_asset_tag")},
    })
}

fn sysinfo() -> Value {
    let nets: Vec<Value> = nics()
        .into_iter()
        .map(|(link, mac)| json!({"link": link, "mac": mac}))
        .collect();
    json!({
        "$schema": {"version": "1.0"},
        "product": {"fullname": "Proxmox VE", "product": "pve", "enable_btrfs": true},
        "iso": {"release": "9.1", "isorelease": "1"},
        "dmi": dmi_json(true),
        "network_interfaces": nets,
    })
}

/// Shell single-quoting for the env file the installer's /init sources.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn write_answer_outputs(a: &answer::Answer, raw: &str, outdir: &str) -> Result<(), String> {
    fs::create_dir_all(outdir).map_err(|e| format!("{outdir}: {e}"))?;
    fs::write(format!("{outdir}/answer.toml"), raw).map_err(|e| e.to_string())?;
    let fqdn = match &a.global.fqdn {
        answer::Fqdn::Simple(f) => f.clone(),
        answer::Fqdn::Extended(x) => format!(
            "pve.{}",
            x.domain.clone().unwrap_or_else(|| "localdomain".into())
        ),
    };
    let mut keys = a.global.root_ssh_keys.join("\n");
    if !keys.is_empty() {
        keys.push('\n');
    }
    fs::write(format!("{outdir}/root-ssh-keys"), keys).map_err(|e| e.to_string())?;
    let fs_name = format!("{:?}", a.disk_setup.filesystem).to_lowercase();
    let disk = a.disk_setup.disk_list.first().cloned().unwrap_or_default();
    let mut env = String::new();
    env.push_str(&format!("ANSWER_FQDN={}\n", sq(&fqdn)));
    env.push_str(&format!(
        "ANSWER_HOSTNAME={}\n",
        sq(fqdn.split('.').next().unwrap_or(""))
    ));
    env.push_str(&format!("ANSWER_FILESYSTEM={}\n", sq(&fs_name)));
    env.push_str(&format!("ANSWER_DISK={}\n", sq(&disk)));
    env.push_str(&format!(
        "ANSWER_REBOOT_ON_ERROR={}\n",
        a.global.reboot_on_error
    ));
    let rm = match a.global.reboot_mode {
        answer::RebootMode::Reboot => "reboot",
        answer::RebootMode::PowerOff => "power-off",
    };
    env.push_str(&format!("ANSWER_REBOOT_MODE={rm}\n"));
    let wh = a
        .post_installation_webhook
        .as_ref()
        .map(|w| w.url.clone())
        .unwrap_or_default();
    env.push_str(&format!("ANSWER_WEBHOOK_URL={}\n", sq(&wh)));
    let fb = a
        .first_boot
        .as_ref()
        .and_then(|f| f.url.clone())
        .unwrap_or_default();
    env.push_str(&format!("ANSWER_FIRST_BOOT_URL={}\n", sq(&fb)));
    fs::write(format!("{outdir}/answer.env"), env).map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<(), String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["sysinfo"] => {
            println!(
                "{}",
                serde_json::to_string_pretty(&sysinfo()).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        ["fetch-answer", url, outdir] => {
            let body = serde_json::to_vec(&sysinfo()).map_err(|e| e.to_string())?;
            eprintln!(
                "standin: POST {url} (system information, {} bytes)",
                body.len()
            );
            let r = http::request("POST", url, Some("application/json"), &body, TIMEOUT)
                .map_err(|e| format!("Failed to retrieve answer file: {e}"))?;
            if !(200..300).contains(&r.status) {
                return Err(format!(
                    "Failed to retrieve answer file: HTTP status {} from {url}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body).trim()
                ));
            }
            let text = String::from_utf8(r.body).map_err(|_| "answer is not UTF-8".to_string())?;
            let is_json = r.content_type.starts_with("application/json");
            let ans = answer::parse(&text, is_json)?;
            write_answer_outputs(&ans, &text, outdir)?;
            eprintln!("standin: answer accepted");
            Ok(())
        }
        ["mode-url", file] => {
            // /auto-installer-mode.toml as prepare-iso writes it (deny_unknown_fields).
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Mode {
                mode: String,
                #[serde(default)]
                #[allow(dead_code)]
                partition_label: Option<String>,
                http: Option<HttpMode>,
            }
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct HttpMode {
                url: Option<String>,
                #[allow(dead_code)]
                cert_fingerprint: Option<String>,
                #[allow(dead_code)]
                token: Option<String>,
            }
            let text = fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let m: Mode = toml::from_str(&text).map_err(|e| format!("invalid {file}: {e}"))?;
            match m.mode.as_str() {
                "http" => {}
                "iso" | "partition" => {
                    return Err(format!(
                        "mode '{}' is not supported by the stand-in",
                        m.mode
                    ));
                }
                other => return Err(format!("invalid {file}: unknown mode '{other}'")),
            }
            let url = m
                .http
                .and_then(|h| h.url)
                .ok_or_else(|| "no [http] url in the ISO: would fall back to DHCP option 250 / DNS TXT, which the stand-in does not do".to_string())?;
            println!("{url}");
            Ok(())
        }
        ["check-answer", file, outdir] => {
            let text = fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let ans = answer::parse(&text, file.ends_with(".json"))?;
            write_answer_outputs(&ans, &text, outdir)
        }
        ["get", url, out] => {
            let r = http::request("GET", url, None, &[], TIMEOUT)?;
            if !(200..300).contains(&r.status) {
                return Err(format!("GET {}: HTTP status {}", redact(url), r.status));
            }
            if r.body.len() > MAX_FIRST_BOOT {
                return Err(format!(
                    "GET {}: {} bytes exceeds the 1 MiB limit",
                    redact(url),
                    r.body.len()
                ));
            }
            fs::write(out, r.body).map_err(|e| format!("{out}: {e}"))
        }
        ["post-json", url, file] => {
            let body = fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let r = http::request("POST", url, Some("application/json"), &body, TIMEOUT)?;
            eprintln!("standin: POST {} -> {}", redact(url), r.status);
            if !(200..300).contains(&r.status) {
                return Err(format!(
                    "POST {}: HTTP status {}: {}",
                    redact(url),
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            Ok(())
        }
        [
            "webhook",
            url,
            fqdn,
            boot_mode,
            ed_pub,
            mgmt_if,
            mgmt_cidr,
            machine_id,
            reboot_mode,
        ] => {
            let ed = fs::read_to_string(ed_pub).map_err(|e| format!("{ed_pub}: {e}"))?;
            let nets: Vec<Value> = nics()
                .into_iter()
                .map(|(name, mac)| {
                    let mgmt = name == *mgmt_if;
                    let mut v = json!({
                        "name": name, "mac": mac, "is-management": mgmt, "is-pinned": false,
                        "udev-properties": {"INTERFACE": name, "ID_NET_NAME_MAC": format!("enx{}", mac.replace(':', ""))},
                    });
                    if mgmt {
                        v["address"] = json!(mgmt_cidr);
                    }
                    v
                })
                .collect();
            let kernel = read_sys("/proc/sys/kernel/osrelease");
            let payload = json!({
                "fqdn": fqdn,
                "machine-id": machine_id,
                "product": {"fullname": "Proxmox VE", "short": "pve", "version": "9.1-1"},
                "iso": {"release": "9.1", "isorelease": "1"},
                "kernel-version": {"release": kernel, "version": "#1 SMP stand-in", "machine": "x86_64"},
                "boot-info": {"mode": boot_mode, "secureboot": false},
                "cpu-info": {"cpus": 1, "cores": 1, "sockets": 1, "vendor": "stand-in", "flags": "", "hvm": false},
                "dmi": dmi_json(true),
                "filesystem": "ext4",
                "disks": [],
                "network-interfaces": nets,
                "ssh-public-host-keys": {"ed25519": ed.trim(), "ecdsa": "", "rsa": ""},
                "reboot-mode": reboot_mode,
            });
            let body = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
            let r = http::request("POST", url, Some("application/json"), &body, TIMEOUT)?;
            eprintln!(
                "standin: post-installation webhook {} -> {}",
                redact(url),
                r.status
            );
            if !(200..300).contains(&r.status) {
                // The real installer logs a failed webhook and carries on.
                eprintln!(
                    "standin: webhook answered {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            Ok(())
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("standin: error: {e}");
            ExitCode::FAILURE
        }
    }
}
