//! The template engine: one minijinja environment holding every text artefact
//! we render from `templates/` (iPXE scripts, the first-boot shell script,
//! later the dashboard's HTML).
//!
//! Templates are embedded in the binary with `include_str!`; an operator may
//! override any of them by putting a file with the same name in an override
//! directory. Undefined variables are errors (strict mode), so a typo in a
//! template fails loudly instead of rendering an empty string.
//!
//! Only `.html` templates are HTML-escaped. iPXE and shell templates are not
//! escaped, so this module enforces that every value inserted into them went
//! through a quoting or validating filter: in a non-escaped template, a string
//! that is not marked safe is a render error. The filters are `shell_quote`
//! (POSIX single quotes) and `ipxe` (rejects every character iPXE's script
//! parser would interpret). This module never does I/O beyond reading the
//! override directory once, and never puts a rendered value into an error
//! message (values may be tokens).

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Every template the binary knows, by name, with its embedded source.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "ipxe-install.ipxe",
        include_str!("../templates/ipxe-install.ipxe"),
    ),
    (
        "ipxe-local-boot.ipxe",
        include_str!("../templates/ipxe-local-boot.ipxe"),
    ),
    (
        "ipxe-entry.ipxe",
        include_str!("../templates/ipxe-entry.ipxe"),
    ),
    ("first-boot.sh", include_str!("../templates/first-boot.sh")),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template override {path}: {source}")]
    ReadOverride {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name} does not parse: {source}")]
    Syntax {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("rendering template {name} failed: {source}")]
    Render {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

/// The loaded templates. Cheap to share behind an `Arc`; rendering is `&self`.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Loads the embedded templates, each replaced by `override_dir/<name>`
    /// when that file exists. Files in the directory with other names are
    /// ignored (they could not be rendered by anything).
    pub fn new(override_dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut sources = Vec::with_capacity(EMBEDDED.len());
        for (name, embedded) in EMBEDDED {
            let source = match override_dir {
                Some(dir) => {
                    let path = dir.join(name);
                    match std::fs::read_to_string(&path) {
                        Ok(text) => text,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            (*embedded).to_owned()
                        }
                        Err(source) => return Err(TemplateError::ReadOverride { path, source }),
                    }
                }
                None => (*embedded).to_owned(),
            };
            sources.push(((*name).to_owned(), source));
        }
        Templates::from_sources(sources)
    }

    /// Builds an environment from explicit `(name, source)` pairs.
    fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Debug info would copy template state (values) into errors.
        env.set_debug(false);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|source| TemplateError::Syntax {
                    name: "<syntax config>".to_owned(),
                    source,
                })?,
        );
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::None) && !is_inert(value) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "value inserted into a script without a quoting filter (use shell_quote or ipxe)",
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_filter("shell_quote", shell_quote_filter);
        env.add_filter("ipxe", ipxe_filter);
        for (name, source) in sources {
            env.add_template_owned(name.clone(), source)
                .map_err(|source| TemplateError::Syntax { name, source })?;
        }
        Ok(Templates { env })
    }

    /// Renders template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: impl Serialize) -> Result<String, TemplateError> {
        let err = |source| TemplateError::Render {
            name: name.to_owned(),
            source,
        };
        let ctx = serde_json::to_value(ctx).map_err(|e| {
            err(minijinja::Error::new(
                ErrorKind::BadSerialization,
                format!("context does not serialize: {e}"),
            ))
        })?;
        let tmpl = self.env.get_template(name).map_err(err)?;
        tmpl.render(json_to_value(ctx)).map_err(err)
    }
}

/// Converts a JSON value into a template value. (minijinja's own serde
/// support is a cargo feature we do not enable; JSON is the same data model.)
fn json_to_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s),
        J::Array(items) => Value::from(items.into_iter().map(json_to_value).collect::<Vec<_>>()),
        J::Object(map) => Value::from(
            map.into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect::<std::collections::BTreeMap<String, Value>>(),
        ),
    }
}

/// A value that cannot change the meaning of a script: numbers, booleans and
/// strings a quoting filter has marked safe.
fn is_inert(value: &Value) -> bool {
    value.is_safe() || matches!(value.kind(), ValueKind::Number | ValueKind::Bool)
}

/// POSIX shell single-quoting: `'…'` with each `'` written as `'\''`.
/// Rejects NUL, which no shell string can hold.
pub fn shell_quote(s: &str) -> Result<String, UnsafeValue> {
    if s.contains('\0') {
        return Err(UnsafeValue { ch: '\0' });
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// Checks that `s` can be written into an iPXE script as one word without
/// any interpretation: no whitespace, no `$`/`{`/`}` (setting expansion), no
/// quotes or backslash, no `|`/`&`/`;`/`#`, no control or non-ASCII
/// characters. The allowed set covers URLs and kernel arguments.
pub fn check_ipxe_word(s: &str) -> Result<(), UnsafeValue> {
    if s.is_empty() {
        return Err(UnsafeValue { ch: ' ' });
    }
    match s.chars().find(|c| !is_ipxe_word_char(*c)) {
        Some(ch) => Err(UnsafeValue { ch }),
        None => Ok(()),
    }
}

fn is_ipxe_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | ':'
                | '/'
                | '?'
                | '='
                | ','
                | '+'
                | '@'
                | '%'
                | '['
                | ']'
                | '!'
                | '*'
        )
}

/// A value rejected for a script: names the offending character, never the
/// value (which may be a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value contains a character that is not allowed here: {ch:?}")]
pub struct UnsafeValue {
    pub ch: char,
}

fn shell_quote_filter(value: &Value) -> Result<Value, minijinja::Error> {
    let s = value_as_text(value)?;
    shell_quote(&s)
        .map(Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

fn ipxe_filter(value: &Value) -> Result<Value, minijinja::Error> {
    let s = value_as_text(value)?;
    check_ipxe_word(&s)
        .map(|()| Value::from_safe_string(s))
        .map_err(|e| {
            minijinja::Error::new(ErrorKind::InvalidOperation, format!("ipxe filter: {e}"))
        })
}

/// Strings and numbers are text; anything else (undefined, none, maps,
/// sequences) is a template bug we report rather than stringify.
fn value_as_text(value: &Value) -> Result<String, minijinja::Error> {
    match value.kind() {
        ValueKind::String | ValueKind::Number => Ok(value.to_string()),
        kind => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("quoting filters take a string or a number, not {kind}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(sources: &[(&str, &str)]) -> Templates {
        Templates::from_sources(
            sources
                .iter()
                .map(|(n, s)| ((*n).to_owned(), (*s).to_owned())),
        )
        .unwrap()
    }

    #[test]
    fn embedded_templates_parse() {
        Templates::new(None).unwrap();
    }

    #[test]
    fn shell_quote_cases() {
        let check = |input: &str, expected: &str| {
            assert_eq!(shell_quote(input).unwrap(), expected, "input {input:?}");
        };
        check("", "''");
        check("plain", "'plain'");
        check("it's", "'it'\\''s'");
        check("$(rm -rf /) `x` \"y\" \\n", "'$(rm -rf /) `x` \"y\" \\n'");
        check("a\nb", "'a\nb'");
        assert!(shell_quote("a\0b").is_err());
    }

    #[test]
    fn ipxe_word_cases() {
        for ok in [
            "http://10.0.0.1:8080/boot/vmlinuz",
            "console=ttyS0,115200n8",
            "pxe.iso_sha256=abc",
            "http://[fd00::1]:80/x?a=b",
        ] {
            assert_eq!(check_ipxe_word(ok), Ok(()), "{ok}");
        }
        for (bad, ch) in [
            ("a b", ' '),
            ("x${net0/ip}", '$'),
            ("a||b", '|'),
            ("a&&b", '&'),
            ("a;b", ';'),
            ("#x", '#'),
            ("a\"b", '"'),
            ("a'b", '\''),
            ("a\\b", '\\'),
            ("a\nb", '\n'),
            ("é", 'é'),
            ("", ' '),
        ] {
            assert_eq!(check_ipxe_word(bad), Err(UnsafeValue { ch }), "{bad:?}");
        }
    }

    #[test]
    fn unquoted_string_in_script_is_an_error() {
        let t = env(&[("x.sh", "echo {{ v }}\n"), ("x.ipxe", "echo {{ v }}\n")]);
        for name in ["x.sh", "x.ipxe"] {
            let err = t.render(name, json!({"v": "secret-token"})).unwrap_err();
            let msg = format!("{err} {:?}", std::error::Error::source(&err));
            assert!(msg.contains("without a quoting filter"), "{msg}");
            assert!(!msg.contains("secret-token"), "value leaked: {msg}");
        }
    }

    #[test]
    fn numbers_and_filtered_values_render() {
        let t = env(&[("x.sh", "n={{ n }} v={{ v|shell_quote }} u={{ u|ipxe }}\n")]);
        let out = t
            .render("x.sh", json!({"n": 5, "v": "a'b", "u": "http://h/x"}))
            .unwrap();
        assert_eq!(out, "n=5 v='a'\\''b' u=http://h/x\n");
    }

    #[test]
    fn ipxe_filter_rejects_without_echoing_value() {
        let t = env(&[("x.ipxe", "chain {{ u|ipxe }}\n")]);
        let err = t
            .render("x.ipxe", json!({"u": "http://h/x secret"}))
            .unwrap_err();
        let msg = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(msg.contains("not allowed"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn undefined_is_an_error() {
        let t = env(&[("x.sh", "{{ missing|shell_quote }}\n")]);
        assert!(t.render("x.sh", json!({})).is_err());
        let t = env(&[("x.sh", "{% if missing %}x{% endif %}\n")]);
        assert!(t.render("x.sh", json!({})).is_err());
    }

    #[test]
    fn html_is_escaped_and_needs_no_filter() {
        let t = env(&[("x.html", "<p>{{ v }}</p>")]);
        let out = t.render("x.html", json!({"v": "<b>&"})).unwrap();
        assert_eq!(out, "<p>&lt;b&gt;&amp;</p>");
    }

    #[test]
    fn override_dir_wins_and_missing_files_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ipxe-local-boot.ipxe"),
            "#!ipxe\n# custom\nexit 1\n",
        )
        .unwrap();
        let t = Templates::new(Some(dir.path())).unwrap();
        let out = t
            .render("ipxe-local-boot.ipxe", json!({"firmware": "uefi"}))
            .unwrap();
        assert_eq!(out, "#!ipxe\n# custom\nexit 1\n");
        let entry = t
            .render(
                "ipxe-entry.ipxe",
                json!({"base_url": "http://h", "attempts": 3, "retry_delay_secs": 5}),
            )
            .unwrap();
        assert!(entry.starts_with("#!ipxe\n"));
    }

    #[test]
    fn broken_override_is_a_syntax_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("first-boot.sh"), "{% if %}\n").unwrap();
        let err = Templates::new(Some(dir.path())).unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { ref name, .. } if name == "first-boot.sh"));
    }
}
