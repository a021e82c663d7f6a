//! Decodes `server-types.yaml`, the original deployment's server-type map:
//!
//! ```yaml
//! server_types:
//!   minisforum-ms-01:
//!     display_name: Minisforum MS-01
//!     boot_disk: nvme0n1
//!     management_nic: enp2s0f0np0
//!     gpu: false
//!     filesystem: zfs          # optional disk defaults: filesystem, disks,
//!     raid: raid1              # filter, filter_match, raid, ashift,
//!     disks: [nvme0n1, nvme1n1] # hdsize, swapsize
//! ```
//!
//! Two layers: serde-saphyr reads the wire form (unknown keys are errors with
//! their line and column), then each entry is validated into a
//! [`ServerType`] with the same rules and messages as the KDL `server-type`
//! node. Never panics, whatever the input.

use super::source::SourceText;
use super::{
    At, DeclaredServerType, DiskField, DiskSelection, DiskSpec, FileDecls, Filesystem, RaidLevel,
    ServerType, SourceLoc,
};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFile {
    #[serde(default)]
    server_types: Option<Entries>,
}

/// The `server_types` map in file order, with each key's location.
struct Entries(Vec<(Spanned<String>, WireServerType)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from server type name to its settings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, WireServerType>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireServerType {
    display_name: Option<Spanned<String>>,
    boot_disk: Option<Spanned<String>>,
    management_nic: Option<Spanned<String>>,
    #[serde(default)]
    gpu: bool,
    filesystem: Option<Spanned<String>>,
    disks: Option<Spanned<Vec<Spanned<String>>>>,
    filter: Option<Spanned<BTreeMap<String, String>>>,
    filter_match: Option<Spanned<String>>,
    raid: Option<Spanned<String>>,
    ashift: Option<Spanned<u8>>,
    hdsize: Option<Spanned<f64>>,
    swapsize: Option<Spanned<f64>>,
}

/// Decodes a server-types YAML file. Every problem is a diagnostic; an entry
/// with any problem is left out.
pub fn parse_server_types_yaml(path: &Path, text: &str) -> FileDecls {
    let src = SourceText::new(path, text);
    let mut out = FileDecls::default();
    // Repeated server-type keys reach our visitor, so the loader reports
    // them like any other duplicate, naming both places.
    let parse = || {
        let options = serde_saphyr::options! {
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        };
        serde_saphyr::from_str_with_options::<Option<WireFile>>(text, options)
    };
    let wire = match std::panic::catch_unwind(parse) {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            let (line, column) = e
                .location()
                .map(|l| (to_usize(l.line()), to_usize(l.column())))
                .unwrap_or((1, 1));
            out.diagnostics
                .push(src.error_at(line.max(1), column.max(1), yaml_message(&e)));
            return out;
        }
        Err(_) => {
            out.diagnostics
                .push(src.error(0, "the YAML parser failed on this file"));
            return out;
        }
    };
    let entries = wire
        .and_then(|w| w.server_types)
        .map(|e| e.0)
        .unwrap_or_default();
    for (key, wst) in entries {
        let mut v = Validator {
            src: &src,
            diags: &mut out.diagnostics,
            ok: true,
        };
        if let Some(st) = v.server_type(&key, wst) {
            out.server_types.push(st);
        }
    }
    out.diagnostics.sort_by_key(|a| (a.line, a.column));
    out
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// serde-saphyr's message without its location suffix (we print our own).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let opts = serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
        formatter: &serde_saphyr::UserMessageFormatter,
    };
    let msg = e.render_with_options(opts);
    let msg = match msg.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => msg,
    };
    let msg = msg.trim().trim_end_matches('.');
    let mut chars = msg.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "invalid YAML".to_string(),
    };
    // "unknown field `boot_disks`, expected one of …": suggest the closest.
    if let Some(rest) = out.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
        && let Some(s) = super::did_you_mean(field, FIELDS)
    {
        out.push_str(&format!(" (did you mean `{s}`?)"));
    }
    out
}

const FIELDS: &[&str] = &[
    "server_types",
    "display_name",
    "boot_disk",
    "management_nic",
    "gpu",
    "filesystem",
    "disks",
    "filter",
    "filter_match",
    "raid",
    "ashift",
    "hdsize",
    "swapsize",
];

struct Validator<'a, 'd> {
    src: &'a SourceText<'a>,
    diags: &'d mut Vec<super::Diagnostic>,
    ok: bool,
}

impl Validator<'_, '_> {
    fn pos<T>(s: &Spanned<T>) -> (usize, usize) {
        (
            to_usize(s.referenced.line()).max(1),
            to_usize(s.referenced.column()).max(1),
        )
    }

    fn err<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>) {
        let (line, column) = Self::pos(at);
        self.diags.push(self.src.error_at(line, column, msg));
        self.ok = false;
    }

    fn check<T, R>(
        &mut self,
        v: &Spanned<T>,
        f: impl FnOnce(&T) -> Result<R, String>,
    ) -> Option<R> {
        match f(&v.value) {
            Ok(r) => Some(r),
            Err(msg) => {
                self.err(v, msg);
                None
            }
        }
    }

    fn server_type(
        &mut self,
        key: &Spanned<String>,
        w: WireServerType,
    ) -> Option<DeclaredServerType> {
        self.check(key, |k| super::check_server_type_key(k));
        let display_name = w.display_name.as_ref().and_then(|d| {
            self.check(d, |s| {
                super::check_text("display name", s).map(|()| s.clone())
            })
        });
        let boot_disk = w
            .boot_disk
            .as_ref()
            .and_then(|d| self.check(d, |s| super::check_disk_name(s).map(|()| s.clone())));
        let management_nic = w
            .management_nic
            .as_ref()
            .and_then(|d| self.check(d, |s| super::check_nic_name(s).map(|()| s.clone())));
        let mut disk = DiskSpec {
            filesystem: w
                .filesystem
                .as_ref()
                .and_then(|f| self.check(f, |s| Filesystem::parse(s))),
            raid: w
                .raid
                .as_ref()
                .and_then(|r| self.check(r, |s| RaidLevel::parse(s))),
            zfs_ashift: w.ashift.as_ref().and_then(|a| {
                self.check(a, |v| {
                    if (9..=16).contains(v) {
                        Ok(*v)
                    } else {
                        Err(format!("ashift must be from 9 to 16, found {v}"))
                    }
                })
            }),
            hdsize: w
                .hdsize
                .as_ref()
                .and_then(|h| self.check(h, |v| size("hdsize", *v, false))),
            swapsize: w
                .swapsize
                .as_ref()
                .and_then(|h| self.check(h, |v| size("swapsize", *v, true))),
            disks: None,
        };
        let match_all = w.filter_match.as_ref().and_then(|m| {
            self.check(m, |s| match s.as_str() {
                "all" => Ok(true),
                "any" => Ok(false),
                _ => Err(super::unknown_value("filter_match", s, &["all", "any"])),
            })
        });
        match (&w.disks, &w.filter) {
            (Some(_), Some(f)) => self.err(
                f,
                "`disks` and `filter` cannot both be given: name the disks or filter them",
            ),
            (Some(list), None) => {
                let mut names: Vec<String> = Vec::new();
                if list.value.is_empty() {
                    self.err(list, "`disks` needs at least one disk name");
                }
                for d in &list.value {
                    if let Some(name) =
                        self.check(d, |s| super::check_disk_name(s).map(|()| s.clone()))
                    {
                        if names.contains(&name) {
                            self.err(d, format!("disk {name:?} is listed twice"));
                        }
                        names.push(name);
                    }
                }
                disk.disks = Some(DiskSelection::List(names));
            }
            (None, Some(f)) => {
                if f.value.is_empty() {
                    self.err(
                        f,
                        "`filter` needs at least one udev property, like ID_MODEL: \"Samsung*\"",
                    );
                }
                for (k, v) in &f.value {
                    if let Err(msg) = super::check_udev_prop(k).and_then(|()| super::check_glob(v))
                    {
                        self.err(f, msg);
                    }
                }
                disk.disks = Some(DiskSelection::Filter {
                    props: f.value.clone(),
                    match_all: match_all.unwrap_or(false),
                });
            }
            (None, None) => {}
        }
        if let (Some(m), None) = (&w.filter_match, &w.filter) {
            self.err(m, "`filter_match` needs a `filter`");
        }
        for (field, msg) in super::disk_conflicts(&disk) {
            let (line, column) = match field {
                DiskField::Raid => w.raid.as_ref().map(Self::pos),
                DiskField::Ashift => w.ashift.as_ref().map(Self::pos),
                DiskField::Swapsize => w.swapsize.as_ref().map(Self::pos),
            }
            .unwrap_or_else(|| Self::pos(key));
            self.diags.push(self.src.error_at(line, column, msg));
            self.ok = false;
        }
        if !self.ok {
            return None;
        }
        let (line, column) = Self::pos(key);
        let st = ServerType {
            key: key.value.clone(),
            display_name: display_name.unwrap_or_else(|| key.value.clone()),
            boot_disk,
            management_nic,
            gpu: w.gpu,
            disk,
            source: SourceLoc {
                file: self.src.path.to_path_buf(),
                line,
                column,
            },
        };
        Some(DeclaredServerType {
            server_type: Arc::new(st),
            key_at: At {
                line,
                column,
                snippet: self.src.line_text(line),
            },
        })
    }
}

fn size(what: &str, v: f64, allow_zero: bool) -> Result<f64, String> {
    if v.is_finite() && (v > 0.0 || (allow_zero && v == 0.0)) && v < 1.0e9 {
        Ok(v)
    } else {
        let range = if allow_zero {
            "zero or more"
        } else {
            "more than zero"
        };
        Err(format!("{what} must be a size in GB ({range}), found {v}"))
    }
}
