//! `/metrics` output is valid Prometheus text exposition (0.0.4), checked by
//! a small strict parser written here, and its counters move with the flow.

use provisioning::metrics::Metrics;
use provisioning::state::{EventKind as E, HostState as S};
use provisioning::store::TransitionRecord;
use std::collections::{BTreeMap, HashMap};

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parses `{a="x",b="y"}` (the leading `{` already consumed); returns the
/// labels and the rest of the line after `}`.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' at {rest:?}"));
        }
    }
}

fn parse(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut helps: HashMap<String, ()> = HashMap::new();
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let ctx = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(ctx("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts
                .next()
                .ok_or_else(|| ctx("comment without name".into()))?;
            let arg = parts
                .next()
                .ok_or_else(|| ctx("comment without text".into()))?;
            if !is_name(name) {
                return Err(ctx("bad metric name".into()));
            }
            match kw {
                "HELP" => {
                    if helps.insert(name.to_string(), ()).is_some() {
                        return Err(ctx("second HELP".into()));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(ctx("bad type".into()));
                    }
                    if exp
                        .samples
                        .iter()
                        .any(|s| family(&s.name, &exp.types) == name)
                    {
                        return Err(ctx("TYPE after samples".into()));
                    }
                    if exp
                        .types
                        .insert(name.to_string(), arg.to_string())
                        .is_some()
                    {
                        return Err(ctx("second TYPE".into()));
                    }
                }
                _ => return Err(ctx("unknown comment keyword".into())),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(ctx("comment must be '# HELP' or '# TYPE'".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| ctx("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(ctx("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..]).map_err(ctx)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| ctx("no space before value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(ctx)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| ctx(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(ctx("trailing fields".into()));
        }
        let fam = family(name, &exp.types);
        let ty = exp
            .types
            .get(fam)
            .ok_or_else(|| ctx(format!("no TYPE for {fam}")))?;
        if ty == "counter" && (!fam.ends_with("_total") || value < 0.0) {
            return Err(ctx("counter must end in _total and not be negative".into()));
        }
        if exp
            .samples
            .iter()
            .any(|s| s.name == name && s.labels == labels)
        {
            return Err(ctx("duplicate series".into()));
        }
        exp.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&exp)?;
    Ok(exp)
}

/// The metric family a sample belongs to (histogram suffixes stripped).
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return base;
        }
    }
    name
}

/// A series' labels without `le`.
type LabelKey = Vec<(String, String)>;

/// Buckets are cumulative and non-decreasing in `le`, end with `+Inf`, and
/// `+Inf` equals `_count`; `_sum` exists.
fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (fam, ty) in &exp.types {
        if ty != "histogram" {
            continue;
        }
        let mut series: BTreeMap<LabelKey, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exp
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or(format!("{fam}: bucket without le"))?;
            let le = parse_value(le)?;
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            series.entry(key).or_default().push((le, s.value));
        }
        if series.is_empty() {
            return Err(format!("{fam}: histogram without buckets"));
        }
        for (key, buckets) in series {
            let labels: BTreeMap<String, String> = key.into_iter().collect();
            for w in buckets.windows(2) {
                if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                    return Err(format!("{fam}{labels:?}: buckets not cumulative/sorted"));
                }
            }
            let last = buckets.last().ok_or("no buckets")?;
            if last.0 != f64::INFINITY {
                return Err(format!("{fam}{labels:?}: no +Inf bucket"));
            }
            let find = |suffix: &str| {
                exp.samples
                    .iter()
                    .find(|s| s.name == format!("{fam}{suffix}") && s.labels == labels)
                    .map(|s| s.value)
            };
            let count = find("_count").ok_or(format!("{fam}{labels:?}: no _count"))?;
            find("_sum").ok_or(format!("{fam}{labels:?}: no _sum"))?;
            if count != last.1 {
                return Err(format!(
                    "{fam}{labels:?}: _count {count} != +Inf bucket {}",
                    last.1
                ));
            }
        }
    }
    Ok(())
}

fn value(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    exp.samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
        .unwrap_or(0.0)
}

fn t(host: &str, at_s: i64, from: S, to: S, event: E, cause: &str) -> TransitionRecord {
    TransitionRecord {
        id: 0,
        host: host.into(),
        operation: Some(1),
        at_ms: at_s * 1000,
        from,
        to,
        event,
        cause: cause.into(),
    }
}

#[test]
fn the_parser_rejects_what_it_should() {
    for bad in [
        "x 1\n",                                // no TYPE
        "# TYPE x gauge\nx{a=\"1\"} one\n",     // bad value
        "# TYPE x gauge\nx{a=1} 1\n",           // unquoted
        "# TYPE x gauge\nx{1a=\"1\"} 1\n",      // bad label name
        "# TYPE x_total counter\nx_total -1\n", // negative counter
        "# TYPE x gauge\nx 1\nx 2\n",           // duplicate
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
        "# TYPE x gauge\nx 1", // no final newline
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
    parse("# HELP x A thing.\n# TYPE x gauge\nx{a=\"q\\\"\\\\\\n\"} 1.5e3\n").unwrap();
}

#[test]
fn empty_metrics_parse_and_list_every_family() {
    let m = Metrics::new();
    let text = m.render(&BTreeMap::new());
    let exp = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for fam in [
        "provisioning_hosts",
        "provisioning_transitions_total",
        "provisioning_rebuilds_total",
        "provisioning_rebuild_duration_seconds",
        "provisioning_phase_duration_seconds",
        "provisioning_boot_requests_total",
        "provisioning_declaration_reloads_total",
        "provisioning_declaration_errors",
        "provisioning_dnsmasq_restarts_total",
    ] {
        assert!(exp.types.contains_key(fam), "{fam} missing");
    }
    assert_eq!(
        value(&exp, "provisioning_hosts", &[("state", "failed")]),
        0.0
    );
}

#[test]
fn counters_move_with_the_flow() {
    let m = Metrics::new();
    let flow = [
        (0, S::Registered, S::PxeReady, E::StartRebuild),
        (60, S::PxeReady, S::PxeBooted, E::IpxeServed),
        (70, S::PxeBooted, S::PxeBooted, E::IpxeServed),
        (90, S::PxeBooted, S::Installing, E::AnswerServed),
        (690, S::Installing, S::Installed, E::InstallReported),
        (750, S::Installed, S::FirstBoot, E::PhoneHome),
        (755, S::FirstBoot, S::Joining, E::JoinStarted),
        (800, S::Joining, S::Ready, E::Completed),
    ];
    for (at, from, to, ev) in flow {
        m.observe_transition(&t("pve-01", at, from, to, ev, "flow"));
    }
    m.observe_transition(&t(
        "pve-02",
        0,
        S::Registered,
        S::PxeReady,
        E::StartRebuild,
        "r1",
    ));
    m.observe_transition(&t(
        "pve-02",
        100,
        S::PxeReady,
        S::PxeReady,
        E::StartRebuild,
        "r2",
    ));
    m.observe_transition(&t(
        "pve-02",
        1900,
        S::PxeReady,
        S::Failed,
        E::Fail,
        "deadline missed in pxe_ready",
    ));
    m.boot_request("ipxe", "ok");
    m.boot_request("ipxe", "ok");
    m.boot_request("answer", "refused");
    m.declaration_reloaded();
    m.set_declaration_errors(2);
    m.dnsmasq_restarted();

    let counts: BTreeMap<S, u64> = [(S::Ready, 1), (S::Failed, 1)].into_iter().collect();
    let text = m.render(&counts);
    let exp = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let v = |name: &str, labels: &[(&str, &str)]| value(&exp, name, labels);

    assert_eq!(v("provisioning_hosts", &[("state", "ready")]), 1.0);
    assert_eq!(v("provisioning_hosts", &[("state", "failed")]), 1.0);
    assert_eq!(
        v(
            "provisioning_transitions_total",
            &[
                ("from", "pxe_booted"),
                ("to", "pxe_booted"),
                ("event", "ipxe_served")
            ]
        ),
        1.0
    );
    assert_eq!(
        v(
            "provisioning_transitions_total",
            &[
                ("from", "registered"),
                ("to", "pxe_ready"),
                ("event", "start_rebuild")
            ]
        ),
        2.0
    );
    assert_eq!(
        v(
            "provisioning_rebuilds_total",
            &[("outcome", "ready"), ("reason", "none")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "provisioning_rebuilds_total",
            &[("outcome", "failed"), ("reason", "deadline")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "provisioning_rebuilds_total",
            &[("outcome", "superseded"), ("reason", "superseded")]
        ),
        1.0
    );
    // pve-01 took 800 s; pve-02's second rebuild 1800 s.
    assert_eq!(v("provisioning_rebuild_duration_seconds_count", &[]), 2.0);
    assert_eq!(v("provisioning_rebuild_duration_seconds_sum", &[]), 2600.0);
    assert_eq!(
        v(
            "provisioning_rebuild_duration_seconds_bucket",
            &[("le", "900")]
        ),
        1.0
    );
    // Installing lasted 600 s; the repeated iPXE fetch did not split pxe_booted (30 s).
    assert_eq!(
        v(
            "provisioning_phase_duration_seconds_sum",
            &[("state", "installing")]
        ),
        600.0
    );
    assert_eq!(
        v(
            "provisioning_phase_duration_seconds_sum",
            &[("state", "pxe_booted")]
        ),
        30.0
    );
    assert_eq!(
        v(
            "provisioning_phase_duration_seconds_count",
            &[("state", "pxe_booted")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "provisioning_boot_requests_total",
            &[("endpoint", "ipxe"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "provisioning_boot_requests_total",
            &[("endpoint", "answer"), ("outcome", "refused")]
        ),
        1.0
    );
    assert_eq!(v("provisioning_declaration_reloads_total", &[]), 1.0);
    assert_eq!(v("provisioning_declaration_errors", &[]), 2.0);
    assert_eq!(v("provisioning_dnsmasq_restarts_total", &[]), 1.0);
    // No label carries a host name.
    assert!(!text.contains("pve-0"), "{text}");
}
