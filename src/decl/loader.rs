//! Loads `hosts.d/*.kdl` and the server-types file into a [`Snapshot`], and
//! keeps a per-file cache so that a change to one file re-parses that file
//! only. Cross-file rules (unique host names, MACs and server-type keys, known
//! server types) are re-checked over the whole set with hash maps, in time
//! linear in the number of declarations.
//!
//! The rules that must hold:
//! - A file version with any error does not come into force: the file's last
//!   valid version stays in force and the errors are in the snapshot's
//!   diagnostics. An error never retires a host; a host leaves the snapshot
//!   only when a valid version of its file no longer declares it, or the file
//!   is deleted.
//! - A conflict between declarations (same host name, same MAC, same
//!   server-type key) is decided for the declaration already in force
//!   (incumbent); between newcomers, for the lexically first file and the
//!   earliest position. The other declaration is the error, naming both
//!   places, and its file version does not come into force.
//! - Deterministic: files are visited in path order; the same files and the
//!   same history give the same snapshot.
//! - Only regular files (symlinks followed) named `*.kdl` and not starting
//!   with `.` are read, so editor swap, backup and lock files are ignored.
//!   An unreadable or non-UTF-8 file is a diagnostic, never a panic.
//! - A hosts directory that cannot be listed is an error, not an empty
//!   directory: the hosts in force stay in force.

use super::{
    At, DeclaredHost, Diagnostic, DiskSpec, FileDecls, HostName, Severity, Snapshot,
    kdl::{parse_kdl, parse_kdl_many},
    resolve_disk,
    yaml::parse_server_types_yaml,
};
use crate::mac::MacAddr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files larger than this are not parsed (a declaration file is kilobytes).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Kdl,
    Yaml,
}

struct FileEntry {
    /// Stable while the file exists; a re-created file gets a new id, so
    /// it holds nothing "in force" from before its deletion.
    id: u64,
    kind: Kind,
    /// Hash of the bytes last read: an unchanged file is not parsed again.
    hash: Option<u64>,
    /// The latest version read, valid or not.
    current: Arc<FileDecls>,
    /// The version in force (the last one that was valid and conflict-free).
    accepted: Option<Arc<FileDecls>>,
}

/// Counters for tests and the daemon's status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Files read from disk.
    pub reads: u64,
    /// Files parsed (a read whose bytes had not changed is not parsed).
    pub parses: u64,
}

/// The declaration loader: owns the per-file cache between reloads.
#[derive(Default)]
pub struct DeclLoader {
    hosts_dir: PathBuf,
    hosts_dir_canon: Option<PathBuf>,
    hosts_dir_abs: Option<PathBuf>,
    server_types: Option<PathBuf>,
    server_types_canon: Option<PathBuf>,
    /// Keyed by the path diagnostics show (`hosts_dir/<name>.kdl`), sorted.
    files: BTreeMap<PathBuf, FileEntry>,
    /// A problem with the directory itself (cannot be listed).
    dir_error: Option<Diagnostic>,
    /// Who holds each name, MAC and server-type key in the snapshot in force.
    owners: Owners,
    next_id: u64,
    stats: LoaderStats,
}

/// Who holds each host name, MAC and server-type key in the snapshot in
/// force (by file id), to decide conflicts for the incumbent.
#[derive(Default)]
struct Owners {
    host: HashMap<HostName, u64>,
    mac: HashMap<MacAddr, HostName>,
    server_type: HashMap<String, u64>,
}

/// Whether a directory entry name is a host declaration file.
pub fn is_decl_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".kdl".len() && name.ends_with(".kdl")
}

impl DeclLoader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> LoaderStats {
        self.stats
    }

    /// Reads the whole directory and the server-types file. On a loader that
    /// already loaded the same paths, unchanged files are not parsed again and
    /// last valid versions are kept.
    pub fn load_all(&mut self, hosts_dir: &Path, server_types: Option<&Path>) -> Snapshot {
        if self.hosts_dir != hosts_dir || self.server_types.as_deref() != server_types {
            self.files.clear();
            self.owners = Owners::default();
        }
        self.hosts_dir = hosts_dir.to_path_buf();
        self.hosts_dir_canon = std::fs::canonicalize(hosts_dir).ok();
        self.hosts_dir_abs = std::path::absolute(hosts_dir).ok();
        self.server_types = server_types.map(Path::to_path_buf);
        self.server_types_canon = server_types.and_then(|p| std::fs::canonicalize(p).ok());
        self.scan_dir();
        if let Some(p) = self.server_types.clone() {
            self.refresh(p, Kind::Yaml);
        }
        self.build()
    }

    /// Lists the directory again and re-reads every file (parsing only the
    /// changed ones): for watcher overflows and "rescan" events.
    pub fn rescan(&mut self) -> Snapshot {
        self.scan_dir();
        if let Some(p) = self.server_types.clone() {
            self.refresh(p, Kind::Yaml);
        }
        self.build()
    }

    /// Re-reads only the given paths (as a file watcher reports them: created,
    /// changed, renamed or deleted files) and re-validates across files.
    /// Paths outside the hosts directory, and names that are not declaration
    /// files, are ignored; the hosts directory itself means "rescan".
    pub fn reload(&mut self, changed_paths: &[PathBuf]) -> Snapshot {
        let mut seen = HashSet::new();
        for path in changed_paths {
            if !seen.insert(path) {
                continue;
            }
            if self.is_hosts_dir(path) {
                self.scan_dir();
            } else if self.is_server_types(path) {
                if let Some(p) = self.server_types.clone() {
                    self.refresh(p, Kind::Yaml);
                }
            } else if let Some(key) = self.key_for(path) {
                self.refresh(key, Kind::Kdl);
            }
        }
        self.build()
    }

    /// A watcher may report paths as given, made absolute, or resolved
    /// through symlinks: all three name the hosts directory.
    fn is_hosts_dir(&self, path: &Path) -> bool {
        path == self.hosts_dir
            || Some(path) == self.hosts_dir_canon.as_deref()
            || Some(path) == self.hosts_dir_abs.as_deref()
    }

    fn is_server_types(&self, path: &Path) -> bool {
        self.server_types.as_deref() == Some(path)
            || (self.server_types_canon.is_some()
                && self.server_types_canon.as_deref() == Some(path))
    }

    /// The cache key of a changed path in the hosts directory, if it names a
    /// declaration file.
    fn key_for(&self, path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?.to_str()?;
        if !is_decl_file_name(name) {
            return None;
        }
        let parent = path.parent()?;
        let in_dir = self.is_hosts_dir(parent)
            || (parent.as_os_str().is_empty() && self.hosts_dir.as_os_str() == ".");
        in_dir.then(|| self.hosts_dir.join(name))
    }

    fn scan_dir(&mut self) {
        let listing = match std::fs::read_dir(&self.hosts_dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.dir_error = Some(file_error(
                    &self.hosts_dir,
                    format!("cannot list the hosts directory: {}", io_message(&e)),
                ));
                return;
            }
        };
        self.dir_error = None;
        if self.hosts_dir_canon.is_none() {
            self.hosts_dir_canon = std::fs::canonicalize(&self.hosts_dir).ok();
        }
        let mut present = Vec::new();
        for entry in listing.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_decl_file_name(name) {
                present.push(self.hosts_dir.join(name));
            }
        }
        let present_set: HashSet<&PathBuf> = present.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(k, e)| e.kind == Kind::Kdl && !present_set.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.files.remove(&k);
        }
        self.refresh_many(present);
    }

    /// Re-reads one file; parses it when its bytes changed; drops it when it
    /// is gone or no longer a regular file.
    fn refresh(&mut self, key: PathBuf, kind: Kind) {
        if let Some(p) = self.read_changed(key, kind) {
            let decls = p.parse();
            self.set_current(p.key, p.kind, Some(p.hash), decls);
        }
    }

    /// Re-reads many host files; the changed ones are parsed on all cores
    /// ([`parse_kdl_many`]) and then recorded in the given order.
    fn refresh_many(&mut self, keys: Vec<PathBuf>) {
        let pending: Vec<Pending> = keys
            .into_iter()
            .filter_map(|k| self.read_changed(k, Kind::Kdl))
            .collect();
        // The UTF-8 files go to the batch parser (results in input order);
        // the others get their "not valid UTF-8" diagnostic from `parse`.
        let texts: Vec<(&Path, &str)> = pending
            .iter()
            .filter_map(|p| Some((p.key.as_path(), p.text().ok()?)))
            .collect();
        let mut parsed = parse_kdl_many(&texts).into_iter();
        let decls: Vec<FileDecls> = pending
            .iter()
            .map(|p| match p.text() {
                Ok(_) => parsed.next().unwrap_or_default(),
                Err(_) => p.parse(),
            })
            .collect();
        for (p, d) in pending.into_iter().zip(decls) {
            self.set_current(p.key, p.kind, Some(p.hash), d);
        }
    }

    /// Reads one file and returns it when it must be parsed (its bytes
    /// changed). A file that is gone, not a regular file, too large or
    /// unreadable is dealt with here and needs no parse.
    fn read_changed(&mut self, key: PathBuf, kind: Kind) -> Option<Pending> {
        let meta = match std::fs::metadata(&key) {
            Ok(m) => m,
            // A configured server-types file that is missing is an error
            // (its last valid version stays in force); a missing host file
            // is a deletion.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && kind == Kind::Kdl => {
                self.files.remove(&key);
                return None;
            }
            Err(e) => {
                let msg = format!("cannot read: {}", io_message(&e));
                self.set_current(key.clone(), kind, None, unreadable_at(&key, &msg));
                return None;
            }
        };
        if !meta.is_file() {
            self.files.remove(&key);
            return None;
        }
        if meta.len() > MAX_FILE_BYTES {
            let msg = format!("file is larger than {} MiB", MAX_FILE_BYTES / 1024 / 1024);
            self.set_current(key.clone(), kind, None, unreadable_at(&key, &msg));
            return None;
        }
        self.stats.reads += 1;
        let bytes = match std::fs::read(&key) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.files.remove(&key);
                return None;
            }
            Err(e) => {
                let msg = format!("cannot read: {}", io_message(&e));
                self.set_current(key.clone(), kind, None, unreadable_at(&key, &msg));
                return None;
            }
        };
        let hash = hash_bytes(&bytes);
        if let Some(entry) = self.files.get(&key)
            && entry.hash == Some(hash)
            && entry.kind == kind
        {
            return None;
        }
        self.stats.parses += 1;
        Some(Pending {
            key,
            kind,
            hash,
            bytes,
        })
    }

    fn set_current(&mut self, key: PathBuf, kind: Kind, hash: Option<u64>, decls: FileDecls) {
        let current = Arc::new(decls);
        match self.files.get_mut(&key) {
            Some(entry) => {
                entry.kind = kind;
                entry.hash = hash;
                entry.current = current;
            }
            None => {
                self.next_id += 1;
                self.files.insert(
                    key,
                    FileEntry {
                        id: self.next_id,
                        kind,
                        hash,
                        current,
                        accepted: None,
                    },
                );
            }
        }
    }

    /// Cross-file validation and the new snapshot. Linear in the number of
    /// declarations per round; a round only repeats when it rejected a file
    /// version, which is rare (a conflict or unknown server type in a newly
    /// read version) and bounded by the number of files.
    fn build(&mut self) -> Snapshot {
        let paths: Vec<&PathBuf> = self.files.keys().collect();
        let entries: Vec<&FileEntry> = self.files.values().collect();
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        // For each file: is its current version a candidate (true) or only
        // its accepted one (false)?
        let mut use_current: Vec<bool> = entries.iter().map(|e| e.current.is_valid()).collect();
        let mut diagnostics: Vec<Diagnostic> = Vec::new();
        let mut round_diags: Vec<Diagnostic>;
        let owners = &self.owners;

        loop {
            round_diags = Vec::new();
            // Per file: beaten in a conflict by these files, or wrong on
            // its own terms (unknown server type, inconsistent disks).
            let mut beaten_by: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
            let mut intrinsic = vec![false; entries.len()];
            let version = |i: usize| -> Option<&Arc<FileDecls>> {
                if use_current[i] {
                    Some(&entries[i].current)
                } else {
                    entries[i].accepted.as_ref()
                }
            };

            // Server types.
            let mut st_win: HashMap<&str, (usize, &super::DeclaredServerType)> = HashMap::new();
            for i in 0..entries.len() {
                let Some(v) = version(i) else { continue };
                for st in &v.server_types {
                    let key = st.server_type.key.as_str();
                    let incumbent = |file: usize| owners.server_type.get(key) == Some(&ids[file]);
                    match st_win.get(key).copied() {
                        None => {
                            st_win.insert(key, (i, st));
                        }
                        Some((wi, w)) => {
                            let (winner, loser) = if incumbent(i) && !incumbent(wi) {
                                st_win.insert(key, (i, st));
                                ((i, st), (wi, w))
                            } else {
                                ((wi, w), (i, st))
                            };
                            let (li, l) = loser;
                            round_diags.push(diag_at(
                                paths[li],
                                &l.key_at,
                                format!(
                                    "server type {key:?} is defined twice: also defined at {}",
                                    place(paths[winner.0], &winner.1.key_at)
                                ),
                            ));
                            beaten_by[li].push(winner.0);
                        }
                    }
                }
            }

            // Host names and MACs.
            let mut name_win: HashMap<&HostName, (usize, &DeclaredHost)> = HashMap::new();
            let mut mac_win: HashMap<MacAddr, (usize, &DeclaredHost)> = HashMap::new();
            for i in 0..entries.len() {
                let Some(v) = version(i) else { continue };
                for h in &v.hosts {
                    let name = &h.host.name;
                    let name_incumbent = |file: usize| owners.host.get(name) == Some(&ids[file]);
                    match name_win.get(name).copied() {
                        None => {
                            name_win.insert(name, (i, h));
                        }
                        Some((wi, w)) => {
                            let (winner, loser) = if name_incumbent(i) && !name_incumbent(wi) {
                                name_win.insert(name, (i, h));
                                ((i, h), (wi, w))
                            } else {
                                ((wi, w), (i, h))
                            };
                            round_diags.push(diag_at(
                                paths[loser.0],
                                &loser.1.name_at,
                                format!(
                                    "duplicate host name \"{name}\": also declared at {}",
                                    place(paths[winner.0], &winner.1.name_at)
                                ),
                            ));
                            beaten_by[loser.0].push(winner.0);
                        }
                    }
                    let mac = h.host.mac;
                    let mac_incumbent = |file: usize, d: &DeclaredHost| {
                        owners.mac.get(&mac) == Some(&d.host.name)
                            && owners.host.get(&d.host.name) == Some(&ids[file])
                    };
                    match mac_win.get(&mac).copied() {
                        None => {
                            mac_win.insert(mac, (i, h));
                        }
                        Some((wi, w)) => {
                            let (winner, loser) = if mac_incumbent(i, h) && !mac_incumbent(wi, w) {
                                mac_win.insert(mac, (i, h));
                                ((i, h), (wi, w))
                            } else {
                                ((wi, w), (i, h))
                            };
                            round_diags.push(diag_at(
                                paths[loser.0],
                                &loser.1.mac_at,
                                format!(
                                    "duplicate MAC {mac}: also used by host \"{}\" at {}",
                                    winner.1.host.name,
                                    place(paths[winner.0], &winner.1.mac_at)
                                ),
                            ));
                            beaten_by[loser.0].push(winner.0);
                        }
                    }
                }
            }

            // Every host names a known server type, and its disk settings
            // merged over the server type's are consistent.
            let mut known: Option<Vec<&str>> = None;
            for i in 0..entries.len() {
                let Some(v) = version(i) else { continue };
                for h in &v.hosts {
                    let key = h.host.server_type.as_str();
                    match st_win.get(key) {
                        // Without disk settings of its own a host inherits
                        // the server type's, which were checked with it.
                        Some(_) if h.host.disk == DiskSpec::default() => {}
                        Some((_, st)) => {
                            let merged = resolve_disk(&h.host, &st.server_type);
                            for (_, msg) in super::disk_conflicts(&merged) {
                                round_diags.push(diag_at(
                                    paths[i],
                                    &h.name_at,
                                    format!(
                                        "host \"{}\" with server type {key:?}: {msg}",
                                        h.host.name
                                    ),
                                ));
                                intrinsic[i] = true;
                            }
                        }
                        None => {
                            let known = known.get_or_insert_with(|| {
                                let mut k: Vec<&str> = st_win.keys().copied().collect();
                                k.sort_unstable();
                                k.truncate(2000);
                                k
                            });
                            let mut msg = format!("unknown server type {key:?}");
                            if let Some(s) = super::did_you_mean(key, known) {
                                msg.push_str(&format!(" (did you mean {s:?}?)"));
                            } else if known.is_empty() {
                                msg.push_str(" (no server types are defined)");
                            }
                            round_diags.push(diag_at(paths[i], &h.server_type_at, msg));
                            intrinsic[i] = true;
                        }
                    }
                }
            }

            // A newly read version with a cross-file error does not come into
            // force; the file falls back to its accepted version and the
            // round runs again. Accepted versions are all incumbents, so they
            // never lose a conflict and the loop ends.
            //
            // Only files beaten by a file that itself stands are rejected in
            // this round: in a chain (c loses to b, b loses to a) c may well
            // come into force once b falls back. When every loser was beaten
            // by another loser (a cycle), all of them are rejected.
            let loser = |i: usize| use_current[i] && (intrinsic[i] || !beaten_by[i].is_empty());
            let mut newly: Vec<usize> = (0..entries.len())
                .filter(|&i| loser(i) && (intrinsic[i] || beaten_by[i].iter().any(|&w| !loser(w))))
                .collect();
            if newly.is_empty() {
                newly = (0..entries.len()).filter(|&i| loser(i)).collect();
            }
            if newly.is_empty() {
                break;
            }
            let newly_set: HashSet<&PathBuf> = newly.iter().map(|&i| paths[i]).collect();
            diagnostics.extend(
                round_diags
                    .iter()
                    .filter(|d| newly_set.contains(&d.file))
                    .cloned(),
            );
            for i in newly {
                use_current[i] = false;
            }
        }
        // Errors that remain in the final round concern versions in force
        // (e.g. a server type that was removed while hosts still name it).
        diagnostics.extend(round_diags);

        let mut snap = Snapshot::default();
        let mut owners = Owners::default();
        for (i, entry) in entries.iter().enumerate() {
            let version = if use_current[i] {
                Some(&entry.current)
            } else {
                entry.accepted.as_ref()
            };
            diagnostics.extend(entry.current.diagnostics.iter().cloned());
            if !use_current[i]
                && let Some(acc) = &entry.accepted
                && !Arc::ptr_eq(acc, &entry.current)
            {
                diagnostics.push(Diagnostic {
                    file: paths[i].clone(),
                    line: 0,
                    column: 0,
                    severity: Severity::Warning,
                    message: format!(
                        "this version of the file is not in force; its last valid version ({} hosts, {} server types) stays in force until the errors are fixed",
                        acc.hosts.len(),
                        acc.server_types.len()
                    ),
                    snippet: None,
                });
            }
            let Some(v) = version else { continue };
            for h in &v.hosts {
                snap.by_mac.insert(h.host.mac, h.host.name.clone());
                snap.hosts.insert(h.host.name.clone(), h.host.clone());
                owners.host.insert(h.host.name.clone(), entry.id);
            }
            for st in &v.server_types {
                snap.server_types
                    .insert(st.server_type.key.clone(), st.server_type.clone());
                owners
                    .server_type
                    .insert(st.server_type.key.clone(), entry.id);
            }
        }
        if let Some(d) = &self.dir_error {
            diagnostics.push(d.clone());
        }
        diagnostics.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
        });
        diagnostics.dedup();
        snap.diagnostics = diagnostics;

        // Record what is in force for the next round of conflicts.
        let accepted_now: Vec<Option<Arc<FileDecls>>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if use_current[i] {
                    Some(e.current.clone())
                } else {
                    e.accepted.clone()
                }
            })
            .collect();
        for (entry, acc) in self.files.values_mut().zip(accepted_now) {
            entry.accepted = acc;
        }
        owners.mac = snap.by_mac.clone();
        self.owners = owners;
        snap
    }
}

/// A file read from disk whose bytes changed since it was last parsed.
struct Pending {
    key: PathBuf,
    kind: Kind,
    hash: u64,
    bytes: Vec<u8>,
}

impl Pending {
    fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.bytes)
    }

    fn parse(&self) -> FileDecls {
        match self.text() {
            Ok(text) => match self.kind {
                Kind::Kdl => parse_kdl(&self.key, text),
                Kind::Yaml => parse_server_types_yaml(&self.key, text),
            },
            Err(e) => {
                let valid = &self.bytes[..e.valid_up_to()];
                let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&valid[line_start..])
                    .chars()
                    .count()
                    + 1;
                FileDecls {
                    diagnostics: vec![Diagnostic {
                        file: self.key.clone(),
                        line,
                        column,
                        severity: Severity::Error,
                        message: "file is not valid UTF-8".to_string(),
                        snippet: None,
                    }],
                    ..FileDecls::default()
                }
            }
        }
    }
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    // "Permission denied (os error 13)" -> "permission denied (os error 13)"
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

/// A problem with a whole file (line and column 0: no position).
fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        severity: Severity::Error,
        message,
        snippet: None,
    }
}

fn unreadable_at(path: &Path, msg: &str) -> FileDecls {
    FileDecls {
        diagnostics: vec![file_error(path, msg.to_string())],
        ..FileDecls::default()
    }
}

fn diag_at(file: &Path, at: &At, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: at.line,
        column: at.column,
        severity: Severity::Error,
        message,
        snippet: at.snippet.clone(),
    }
}

fn place(file: &Path, at: &At) -> String {
    format!("{}:{}:{}", file.display(), at.line, at.column)
}
