//! Decodes one `hosts.d/*.kdl` file (KDL 2.0) into host and server-type
//! declarations, reporting every problem with its line and column.
//!
//! The `kdl` crate gives us a document with byte spans; this module is the
//! span-aware decoder on top of it: it knows the grammar (which nodes, which
//! children, which value types) and turns each violation into a
//! [`Diagnostic`] at the exact node or value. It checks one file alone and
//! never looks at other files (uniqueness across files is the loader's job).
//! It must never panic, whatever the input.

use super::source::SourceText;
use super::{
    At, DeclaredHost, DeclaredServerType, Diagnostic, DiskField, DiskSelection, DiskSpec,
    FileDecls, Filesystem, Host, HostName, RaidLevel, ServerType, SourceLoc, StaticNetwork,
};
use crate::mac::MacAddr;
use ::kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

const TOP_NODES: &[&str] = &["host", "server-type"];
const HOST_CHILDREN: &[&str] = &[
    "mac",
    "server-type",
    "rebuild",
    "wake-on-lan",
    "network",
    "disk",
];
const SERVER_TYPE_CHILDREN: &[&str] =
    &["display-name", "boot-disk", "management-nic", "gpu", "disk"];
const NETWORK_CHILDREN: &[&str] = &["cidr", "gateway", "dns"];
const DISK_CHILDREN: &[&str] = &[
    "filesystem",
    "disks",
    "filter",
    "filter-match",
    "raid",
    "ashift",
    "hdsize",
    "swapsize",
];

/// Decodes one KDL file. Syntax errors, unknown nodes and bad values all end
/// up in [`FileDecls::diagnostics`]; a host or server type with any error is
/// left out of the result.
pub fn parse_kdl(path: &Path, text: &str) -> FileDecls {
    decode(path, text, parse_guarded)
}

/// [`parse_kdl`] for many files at once, on up to one thread per core (each
/// with the parser's large stack). The results come back in input order and
/// are exactly what [`parse_kdl`] gives for each file alone: the work is only
/// spread out, never shared between files.
pub fn parse_kdl_many(files: &[(&Path, &str)]) -> Vec<FileDecls> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_PARSE_WORKERS)
        .min(files.len());
    if workers <= 1 {
        return files.iter().map(|(p, t)| parse_kdl(p, t)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<FileDecls>> = Vec::new();
    out.resize_with(files.len(), || None);
    let done: Vec<Vec<(usize, FileDecls)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("kdl-parse".into())
                    .stack_size(PARSER_STACK)
                    .spawn_scoped(scope, || {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((path, text)) = files.get(i) else {
                                return mine;
                            };
                            // Already on a large stack: parse here.
                            let decls = decode(path, text, parse_here);
                            mine.push((i, decls));
                        }
                    })
                    .ok()
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (i, d) in done.into_iter().flatten() {
        out[i] = Some(d);
    }
    // A file no worker finished (no thread could be started, or a worker
    // died): parse it here, one at a time.
    out.into_iter()
        .zip(files)
        .map(|(d, (p, t))| d.unwrap_or_else(|| parse_kdl(p, t)))
        .collect()
}

/// More parser threads than this do not help: files are small and the
/// results are merged on one thread.
const MAX_PARSE_WORKERS: usize = 8;

fn decode(
    path: &Path,
    text: &str,
    parse: impl FnOnce(&str) -> Option<Result<KdlDocument, ::kdl::KdlError>>,
) -> FileDecls {
    let src = SourceText::new(path, text);
    let mut dec = Decoder {
        src: &src,
        diags: Vec::new(),
        out: FileDecls::default(),
    };
    // The kdl crate's parser recurses once per nested block: deep nesting
    // would overflow the stack and abort the process, which no
    // `catch_unwind` can stop. Our grammar nests four levels at most.
    if let Some(offset) = too_deep(text) {
        dec.diags.push(src.error(
            offset,
            format!(
                "blocks, type annotations or comments are nested deeper than {MAX_NESTING} levels"
            ),
        ));
        out_sorted(&mut dec.diags);
        return FileDecls {
            diagnostics: dec.diags,
            ..FileDecls::default()
        };
    }
    match parse(text) {
        Some(Ok(doc)) => dec.document(&doc),
        Some(Err(err)) => {
            for d in &err.diagnostics {
                let mut msg = sentence(d.message.as_deref().unwrap_or("syntax error"));
                let rest = text.get(d.span.offset()..).unwrap_or("");
                if ["true", "false", "null"]
                    .iter()
                    .any(|w| rest.starts_with(w))
                {
                    msg.push_str(" (KDL 2 writes #true, #false and #null)");
                }
                if let Some(help) = &d.help {
                    msg.push_str(&format!(" (help: {})", sentence(help)));
                }
                dec.diags.push(src.error(d.span.offset(), msg));
            }
            if err.diagnostics.is_empty() {
                dec.diags.push(src.error(0, "invalid KDL document"));
            }
        }
        None => dec
            .diags
            .push(src.error(0, "the KDL parser failed on this file")),
    }
    let mut out = dec.out;
    out.diagnostics = dec.diags;
    out_sorted(&mut out.diagnostics);
    if out.diagnostics.len() > MAX_ERRORS {
        out.diagnostics.truncate(MAX_ERRORS);
        let last = out.diagnostics[MAX_ERRORS - 1].clone();
        out.diagnostics.push(Diagnostic {
            message: format!("too many errors in this file; only the first {MAX_ERRORS} are shown"),
            ..last
        });
    }
    out
}

/// Errors reported per file; past this, the file is clearly not a host
/// declaration and listing more helps no one.
const MAX_ERRORS: usize = 100;

fn out_sorted(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|a| (a.line, a.column));
}

/// Deeper than any valid file nests; far below what overflows a stack.
const MAX_NESTING: usize = 32;

/// Stack for the parser thread: generous, so that recursion we did not
/// foresee needs a very large file before it can overflow.
const PARSER_STACK: usize = 64 * 1024 * 1024;

/// Runs the kdl crate's parser on the current thread, a panic inside it
/// becoming `None`.
fn parse_here(text: &str) -> Option<Result<KdlDocument, ::kdl::KdlError>> {
    std::panic::catch_unwind(|| KdlDocument::parse(text)).ok()
}

/// Runs the kdl crate's parser on its own thread with a large stack. The
/// crate is not ours: a panic inside it becomes `None` (reported as a
/// diagnostic) instead of taking the daemon down.
fn parse_guarded(text: &str) -> Option<Result<KdlDocument, ::kdl::KdlError>> {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("kdl-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || KdlDocument::parse(text))
        {
            Ok(handle) => handle.join().ok(),
            // No thread to be had: parse here.
            Err(_) => parse_here(text),
        }
    })
}

/// The offset where the text nests deeper than [`MAX_NESTING`]: blocks
/// `{`, type annotations `(`, `/*` comments (which nest in KDL), or a run of
/// slashdash `/-` comments, each of which the kdl parser handles by
/// recursion. Characters inside strings and
/// comments count too: that only matters for files no one writes.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut slashdashes = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        match (b, next) {
            (b'{' | b'(', _) | (b'/', Some(b'*')) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            (b'}' | b')', _) | (b'*', Some(b'/')) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if b == b'/' && bytes.get(i + 1) == Some(&b'-') {
            slashdashes += 1;
            if slashdashes > MAX_NESTING {
                return Some(i);
            }
        } else if !(b.is_ascii_whitespace() || (b == b'-' && i > 0 && bytes[i - 1] == b'/')) {
            slashdashes = 0;
        }
    }
    None
}

/// Lower-cases the first letter and drops a trailing period (our message style).
fn sentence(s: &str) -> String {
    let s = s.trim().trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn describe(v: &KdlValue) -> String {
    match v {
        KdlValue::String(s) => format!("string {:?}", s.chars().take(40).collect::<String>()),
        KdlValue::Integer(i) => format!("integer {i}"),
        KdlValue::Float(f) => format!("number {f}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".to_string(),
    }
}

fn expected_list(known: &[&str]) -> String {
    known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Decoder<'a> {
    src: &'a SourceText<'a>,
    diags: Vec<Diagnostic>,
    out: FileDecls,
}

/// A child node seen in a block, for duplicate detection.
type Seen<'n> = HashMap<&'n str, usize>;

impl<'a> Decoder<'a> {
    fn err(&mut self, offset: usize, msg: impl Into<String>) {
        self.diags.push(self.src.error(offset, msg));
    }

    fn at(&self, offset: usize) -> At {
        let (line, column) = self.src.line_col(offset);
        At {
            line,
            column,
            snippet: self.src.line_text(line),
        }
    }

    fn loc(&self, offset: usize) -> SourceLoc {
        let (line, column) = self.src.line_col(offset);
        SourceLoc {
            file: self.src.path.to_path_buf(),
            line,
            column,
        }
    }

    fn document(&mut self, doc: &KdlDocument) {
        for node in doc.nodes() {
            match node.name().value() {
                "host" => self.host(node),
                "server-type" => self.server_type(node),
                other => self.unknown(node, other, "at the top level", TOP_NODES),
            }
        }
    }

    fn unknown(&mut self, node: &KdlNode, name: &str, place: &str, known: &[&str]) {
        let shown: String = name.chars().take(64).collect();
        let mut msg = format!("unknown node `{shown}` {place}");
        if let Some(s) = super::did_you_mean(name, known) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
        msg.push_str(&format!("; expected one of {}", expected_list(known)));
        self.err(node.name().span().offset(), msg);
    }

    /// Reports a second occurrence of a child node. Returns false for a duplicate.
    fn first_time<'n>(&mut self, seen: &mut Seen<'n>, node: &'n KdlNode) -> bool {
        let name = node.name().value();
        let offset = node.name().span().offset();
        if let Some(&first) = seen.get(name) {
            let (l, c) = self.src.line_col(first);
            self.err(
                offset,
                format!("duplicate `{name}` (first given at line {l}, column {c})"),
            );
            false
        } else {
            seen.insert(name, offset);
            true
        }
    }

    /// The plain arguments of a node; reports properties, type annotations
    /// and (unless `block` is allowed) a children block. None after an error.
    fn args<'n>(&mut self, node: &'n KdlNode, block: bool) -> Option<Vec<&'n KdlEntry>> {
        let name = node.name().value();
        let mut ok = true;
        if node.ty().is_some() {
            self.err(
                node.span().offset(),
                format!("type annotations are not supported on `{name}`"),
            );
            ok = false;
        }
        let mut args = Vec::new();
        for e in node.entries() {
            if let Some(prop) = e.name() {
                let shown: String = prop.value().chars().take(64).collect();
                self.err(
                    e.span().offset(),
                    format!("`{name}` takes no properties (found `{shown}=`)"),
                );
                ok = false;
            } else if e.ty().is_some() {
                self.err(
                    e.span().offset(),
                    format!("type annotations are not supported on values of `{name}`"),
                );
                ok = false;
            } else {
                args.push(e);
            }
        }
        if !block && let Some(children) = node.children() {
            self.err(
                children.span().offset(),
                format!("`{name}` takes no children block"),
            );
            ok = false;
        }
        ok.then_some(args)
    }

    /// The single argument of `name value`.
    fn single<'n>(&mut self, node: &'n KdlNode, block: bool) -> Option<&'n KdlEntry> {
        let name = node.name().value();
        let args = self.args(node, block)?;
        match args.as_slice() {
            [one] => Some(*one),
            [] => {
                self.err(
                    node.name().span().offset(),
                    format!("`{name}` needs a value"),
                );
                None
            }
            [_, second, ..] => {
                self.err(
                    second.span().offset(),
                    format!("`{name}` takes one value, found {}", args.len()),
                );
                None
            }
        }
    }

    fn string<'n>(&mut self, node: &KdlNode, e: &'n KdlEntry) -> Option<&'n str> {
        match e.value() {
            KdlValue::String(s) => Some(s),
            other => {
                self.err(
                    e.span().offset(),
                    format!(
                        "`{}` must be a string, found {}",
                        node.name().value(),
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn single_string<'n>(&mut self, node: &'n KdlNode) -> Option<(&'n str, usize)> {
        let e = self.single(node, false)?;
        let s = self.string(node, e)?;
        Some((s, e.span().offset()))
    }

    /// `name value` where the value passes `check`, reported at the value.
    fn checked_string<T>(
        &mut self,
        node: &KdlNode,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (s, offset) = self.single_string(node)?;
        match check(s) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.err(offset, msg);
                None
            }
        }
    }

    fn integer(&mut self, node: &KdlNode, min: u64, max: u64) -> Option<u64> {
        let e = self.single(node, false)?;
        let name = node.name().value();
        match e.value() {
            KdlValue::Integer(i) if *i >= i128::from(min) && *i <= i128::from(max) => {
                u64::try_from(*i).ok()
            }
            other => {
                let range = if max == u64::MAX {
                    format!("{min} or more")
                } else {
                    format!("from {min} to {max}")
                };
                self.err(
                    e.span().offset(),
                    format!(
                        "`{name}` must be a whole number {range}, found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// A size in GB: a positive number (integer or decimal).
    fn size(&mut self, node: &KdlNode, allow_zero: bool) -> Option<f64> {
        let e = self.single(node, false)?;
        let v = match e.value() {
            KdlValue::Integer(i) => Some(*i as f64),
            KdlValue::Float(f) => Some(*f),
            _ => None,
        };
        match v {
            Some(v) if v.is_finite() && (v > 0.0 || (allow_zero && v == 0.0)) && v < 1.0e9 => {
                Some(v)
            }
            _ => {
                let what = if allow_zero {
                    "zero or more"
                } else {
                    "more than zero"
                };
                self.err(
                    e.span().offset(),
                    format!(
                        "`{}` must be a size in GB ({what}), found {}",
                        node.name().value(),
                        describe(e.value())
                    ),
                );
                None
            }
        }
    }

    /// A flag: bare `name`, or `name #true` / `name #false`.
    fn flag(&mut self, node: &KdlNode) -> Option<bool> {
        let args = self.args(node, false)?;
        match args.as_slice() {
            [] => Some(true),
            [one] => match one.value() {
                KdlValue::Bool(b) => Some(*b),
                other => {
                    self.err(
                        one.span().offset(),
                        format!(
                            "`{}` must be #true or #false, found {}",
                            node.name().value(),
                            describe(other)
                        ),
                    );
                    None
                }
            },
            [_, second, ..] => {
                self.err(
                    second.span().offset(),
                    format!("`{}` takes at most one value", node.name().value()),
                );
                None
            }
        }
    }

    /// A node that only holds a children block (`network { … }`).
    fn block<'n>(&mut self, node: &'n KdlNode) -> Option<&'n KdlDocument> {
        let args = self.args(node, true)?;
        let name = node.name().value();
        if let Some(first) = args.first() {
            self.err(first.span().offset(), format!("`{name}` takes no values"));
            return None;
        }
        match node.children() {
            Some(c) => Some(c),
            None => {
                self.err(
                    node.name().span().offset(),
                    format!("`{name}` needs a children block {{ … }}"),
                );
                None
            }
        }
    }

    /// The quoted name of `host "name" { … }` / `server-type "key" { … }`.
    fn declared_name<'n>(&mut self, node: &'n KdlNode) -> Option<(&'n str, usize)> {
        let e = self.single(node, true)?;
        match e.value() {
            KdlValue::String(s) => Some((s, e.span().offset())),
            other => {
                self.err(
                    e.span().offset(),
                    format!(
                        "`{}` needs its name as a quoted string, found {}",
                        node.name().value(),
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn host(&mut self, node: &KdlNode) {
        let errors_before = self.diags.len();
        let node_offset = node.name().span().offset();
        let name = self.declared_name(node).and_then(|(s, offset)| {
            HostName::parse(s)
                .map_err(|e| self.err(offset, e.to_string()))
                .ok()
        });
        let Some(children) = node.children() else {
            self.err(
                node_offset,
                "`host` needs a children block with `mac`, `server-type` and `rebuild`",
            );
            return;
        };
        let mut seen = Seen::new();
        let mut mac: Option<(MacAddr, usize)> = None;
        let mut server_type: Option<(String, usize)> = None;
        let mut rebuild = None;
        let mut wake_on_lan = false;
        let mut network = None;
        let mut disk = DiskSpec::default();
        for child in children.nodes() {
            if !HOST_CHILDREN.contains(&child.name().value()) {
                self.unknown(child, child.name().value(), "in `host`", HOST_CHILDREN);
                continue;
            }
            if !self.first_time(&mut seen, child) {
                continue;
            }
            match child.name().value() {
                "mac" => {
                    if let Some((s, offset)) = self.single_string(child) {
                        match s.parse::<MacAddr>() {
                            Ok(m) => mac = Some((m, offset)),
                            Err(e) => self.err(offset, e.to_string()),
                        }
                    }
                }
                "server-type" => {
                    if let Some((s, offset)) = self.single_string(child) {
                        match super::check_server_type_key(s) {
                            Ok(()) => server_type = Some((s.to_string(), offset)),
                            Err(e) => self.err(offset, e),
                        }
                    }
                }
                "rebuild" => rebuild = self.integer(child, 0, u64::MAX),
                "wake-on-lan" => wake_on_lan = self.flag(child).unwrap_or(false),
                "network" => network = self.network(child),
                "disk" => disk = self.disk(child).unwrap_or_default(),
                _ => {}
            }
        }
        for (required, present) in [
            ("mac", seen.contains_key("mac")),
            ("server-type", seen.contains_key("server-type")),
            ("rebuild", seen.contains_key("rebuild")),
        ] {
            if !present {
                let who = name
                    .as_ref()
                    .map(|n| format!("host `{n}`"))
                    .unwrap_or_else(|| "`host`".to_string());
                self.err(node_offset, format!("{who} is missing `{required}`"));
            }
        }
        if self.diags.len() != errors_before {
            return;
        }
        let (Some(name), Some((mac, mac_offset)), Some((server_type, st_offset)), Some(rebuild)) =
            (name, mac, server_type, rebuild)
        else {
            return;
        };
        let host = Host {
            name,
            mac,
            server_type,
            rebuild,
            network,
            disk,
            wake_on_lan,
            source: self.loc(node_offset),
        };
        let declared = DeclaredHost {
            host: Arc::new(host),
            name_at: self.at(node_offset),
            mac_at: self.at(mac_offset),
            server_type_at: self.at(st_offset),
        };
        self.out.hosts.push(declared);
    }

    fn network(&mut self, node: &KdlNode) -> Option<StaticNetwork> {
        let children = self.block(node)?;
        let errors_before = self.diags.len();
        let mut seen = Seen::new();
        let mut cidr: Option<ipnet::IpNet> = None;
        let mut gateway: Option<(std::net::IpAddr, usize)> = None;
        let mut dns = Vec::new();
        for child in children.nodes() {
            if !NETWORK_CHILDREN.contains(&child.name().value()) {
                self.unknown(
                    child,
                    child.name().value(),
                    "in `network`",
                    NETWORK_CHILDREN,
                );
                continue;
            }
            if !self.first_time(&mut seen, child) {
                continue;
            }
            match child.name().value() {
                "cidr" => {
                    cidr = self.checked_string(child, |s| {
                        s.parse::<ipnet::IpNet>().map_err(|_| {
                            format!(
                                "invalid cidr {:?}: expected an address with prefix length, like \"192.168.1.21/24\"",
                                s.chars().take(64).collect::<String>()
                            )
                        })
                    })
                }
                "gateway" => {
                    if let Some((s, offset)) = self.single_string(child) {
                        match s.parse() {
                            Ok(ip) => gateway = Some((ip, offset)),
                            Err(_) => self.err(
                                offset,
                                format!(
                                    "invalid gateway {:?}: expected an IP address",
                                    s.chars().take(64).collect::<String>()
                                ),
                            ),
                        }
                    }
                }
                "dns" => {
                    if let Some(args) = self.args(child, false) {
                        if args.is_empty() {
                            self.err(
                                child.name().span().offset(),
                                "`dns` needs at least one server address",
                            );
                        }
                        for e in args {
                            if let Some(s) = self.string(child, e) {
                                match s.parse() {
                                    Ok(ip) => dns.push(ip),
                                    Err(_) => self.err(
                                        e.span().offset(),
                                        format!(
                                            "invalid dns server {:?}: expected an IP address",
                                            s.chars().take(64).collect::<String>()
                                        ),
                                    ),
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for required in NETWORK_CHILDREN {
            if !seen.contains_key(required) {
                self.err(
                    node.name().span().offset(),
                    format!("`network` is missing `{required}` (a static network needs cidr, gateway and dns)"),
                );
            }
        }
        if let (Some(cidr), Some((gw, gw_offset))) = (cidr, gateway) {
            if !cidr.contains(&gw) {
                self.err(
                    gw_offset,
                    format!("gateway {gw} is not inside the network of cidr {cidr}"),
                );
            } else if cidr.addr() == gw {
                self.err(gw_offset, format!("gateway {gw} is the host's own address"));
            }
        }
        if self.diags.len() != errors_before {
            return None;
        }
        Some(StaticNetwork {
            cidr: cidr?,
            gateway: gateway?.0,
            dns,
        })
    }

    fn disk(&mut self, node: &KdlNode) -> Option<DiskSpec> {
        let children = self.block(node)?;
        let errors_before = self.diags.len();
        let mut seen = Seen::new();
        let mut spec = DiskSpec::default();
        let mut offsets: HashMap<&str, usize> = HashMap::new();
        let mut list: Option<Vec<String>> = None;
        let mut filter: Option<BTreeMap<String, String>> = None;
        let mut match_all = None;
        for child in children.nodes() {
            let name = child.name().value();
            if !DISK_CHILDREN.contains(&name) {
                self.unknown(child, name, "in `disk`", DISK_CHILDREN);
                continue;
            }
            if !self.first_time(&mut seen, child) {
                continue;
            }
            offsets.insert(name, child.name().span().offset());
            match name {
                "filesystem" => spec.filesystem = self.checked_string(child, Filesystem::parse),
                "raid" => spec.raid = self.checked_string(child, RaidLevel::parse),
                "ashift" => {
                    spec.zfs_ashift = self
                        .integer(child, 9, 16)
                        .and_then(|v| u8::try_from(v).ok())
                }
                "hdsize" => spec.hdsize = self.size(child, false),
                "swapsize" => spec.swapsize = self.size(child, true),
                "disks" => list = self.disk_list(child),
                "filter" => filter = self.filter(child),
                "filter-match" => {
                    match_all = self.checked_string(child, |s| match s {
                        "all" => Ok(true),
                        "any" => Ok(false),
                        _ => Err(super::unknown_value("filter-match", s, &["all", "any"])),
                    })
                }
                _ => {}
            }
        }
        if let (Some(&d), Some(&f)) = (offsets.get("disks"), offsets.get("filter")) {
            self.err(
                d.max(f),
                "`disks` and `filter` cannot both be given: name the disks or filter them",
            );
        }
        if let (Some(&m), None) = (offsets.get("filter-match"), offsets.get("filter")) {
            self.err(m, "`filter-match` needs a `filter`");
        }
        for (field, msg) in super::disk_conflicts(&spec) {
            let key = match field {
                DiskField::Raid => "raid",
                DiskField::Ashift => "ashift",
                DiskField::Swapsize => "swapsize",
            };
            let offset = offsets
                .get(key)
                .copied()
                .unwrap_or(node.name().span().offset());
            self.err(offset, msg);
        }
        if self.diags.len() != errors_before {
            return None;
        }
        spec.disks = match (list, filter) {
            (Some(l), _) => Some(DiskSelection::List(l)),
            (None, Some(props)) => Some(DiskSelection::Filter {
                props,
                match_all: match_all.unwrap_or(false),
            }),
            (None, None) => None,
        };
        Some(spec)
    }

    fn disk_list(&mut self, node: &KdlNode) -> Option<Vec<String>> {
        let args = self.args(node, false)?;
        if args.is_empty() {
            self.err(
                node.name().span().offset(),
                "`disks` needs at least one disk name",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for e in args {
            match self.string(node, e) {
                Some(s) => match super::check_disk_name(s) {
                    Ok(()) if out.iter().any(|d| d == s) => {
                        self.err(e.span().offset(), format!("disk {s:?} is listed twice"));
                        ok = false;
                    }
                    Ok(()) => out.push(s.to_string()),
                    Err(msg) => {
                        self.err(e.span().offset(), msg);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn filter(&mut self, node: &KdlNode) -> Option<BTreeMap<String, String>> {
        let children = self.block(node)?;
        let errors_before = self.diags.len();
        let mut seen = Seen::new();
        let mut props = BTreeMap::new();
        for child in children.nodes() {
            if !self.first_time(&mut seen, child) {
                continue;
            }
            let prop = child.name().value();
            if let Err(msg) = super::check_udev_prop(prop) {
                self.err(child.name().span().offset(), msg);
                continue;
            }
            if let Some(glob) =
                self.checked_string(child, |s| super::check_glob(s).map(|()| s.to_string()))
            {
                props.insert(prop.to_string(), glob);
            }
        }
        if children.nodes().is_empty() {
            self.err(
                node.name().span().offset(),
                "`filter` needs at least one udev property, like ID_MODEL \"Samsung*\"",
            );
        }
        (self.diags.len() == errors_before).then_some(props)
    }

    fn server_type(&mut self, node: &KdlNode) {
        let errors_before = self.diags.len();
        let node_offset = node.name().span().offset();
        let key = self.declared_name(node).and_then(|(s, offset)| {
            super::check_server_type_key(s)
                .map(|()| s.to_string())
                .map_err(|e| self.err(offset, e))
                .ok()
        });
        let mut seen = Seen::new();
        let mut display_name = None;
        let mut boot_disk = None;
        let mut management_nic = None;
        let mut gpu = false;
        let mut disk = DiskSpec::default();
        let empty = KdlDocument::new();
        for child in node.children().unwrap_or(&empty).nodes() {
            let name = child.name().value();
            if !SERVER_TYPE_CHILDREN.contains(&name) {
                self.unknown(child, name, "in `server-type`", SERVER_TYPE_CHILDREN);
                continue;
            }
            if !self.first_time(&mut seen, child) {
                continue;
            }
            match name {
                "display-name" => {
                    display_name = self.checked_string(child, |s| {
                        super::check_text("display name", s).map(|()| s.to_string())
                    })
                }
                "boot-disk" => {
                    boot_disk = self.checked_string(child, |s| {
                        super::check_disk_name(s).map(|()| s.to_string())
                    })
                }
                "management-nic" => {
                    management_nic = self
                        .checked_string(child, |s| super::check_nic_name(s).map(|()| s.to_string()))
                }
                "gpu" => gpu = self.flag(child).unwrap_or(false),
                "disk" => disk = self.disk(child).unwrap_or_default(),
                _ => {}
            }
        }
        if self.diags.len() != errors_before {
            return;
        }
        let Some(key) = key else { return };
        let st = ServerType {
            display_name: display_name.unwrap_or_else(|| key.clone()),
            key,
            boot_disk,
            management_nic,
            gpu,
            disk,
            source: self.loc(node_offset),
        };
        self.out.server_types.push(DeclaredServerType {
            server_type: Arc::new(st),
            key_at: self.at(node_offset),
        });
    }
}
