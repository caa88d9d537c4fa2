//! `${NAME}` / `${NAME:-default}` interpolation.
//!
//! Substitution happens on parsed scalar *values*, never on the raw text, so a variable's value
//! cannot change the document's structure: a value containing a newline, `: ` or `#` stays inside
//! its string. Each interpolated scalar is re-emitted as a double-quoted YAML string that
//! occupies exactly the same lines as the original (escaped line breaks pad it), so every line
//! number reported later is still the line in the user's file.
//!
//! Rules:
//! - `${NAME}`: the variable's value; an unset variable is an error (a set but empty one is the
//!   empty string).
//! - `${NAME:-default}`: `default` when the variable is unset or empty. The default is literal
//!   text (no nesting) and cannot contain `}`.
//! - `$${` is an escape for a literal `${`. Any other `$` is kept as is.
//! - Names are `[A-Za-z_][A-Za-z0-9_]*`.
//! - Only values are interpolated, not mapping keys.
//! - An interpolated scalar is always a string in YAML terms; numbers and booleans still
//!   deserialize from it (`max_headers: ${N}` works).

use serde_saphyr::granit_parser::ScalarStyle;

use crate::source_map::ScalarSite;
use crate::ConfigError;

/// Expands references in one scalar value.
pub fn interpolate(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                return Err(format!(
                    "unterminated `${{` in `{value}` (write `$${{` for a literal `${{`)"
                ));
            };
            let inner = &tail[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_valid_name(name) {
                return Err(format!(
                    "invalid variable reference `${{{inner}}}`: use `${{NAME}}` or `${{NAME:-default}}` with NAME matching [A-Za-z_][A-Za-z0-9_]*"
                ));
            }
            if default.is_some_and(|d| d.contains("${")) {
                return Err(format!(
                    "nested reference in the default of `${{{inner}}}` is not supported"
                ));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                    ))
                }
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Interpolates every scalar site and returns the rewritten document (None when nothing
/// changed), or all interpolation errors.
pub(crate) fn apply(
    text: &str,
    sites: &[ScalarSite],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for site in sites {
        if !site.value.contains("${") {
            continue;
        }
        match interpolate(&site.value, env) {
            Ok(value) => {
                if let Some(edit) = replacement(text, site, &value) {
                    edits.push(edit);
                } else {
                    errors.push(ConfigError::at(
                        &site.path,
                        "cannot interpolate this block scalar; use a quoted string",
                    ));
                }
            }
            Err(message) => errors.push(ConfigError::at(&site.path, message)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if edits.is_empty() {
        return Ok(None);
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len() + 64);
    let mut pos = 0;
    for (start, end, repl) in edits {
        if start < pos || end > text.len() {
            // Overlapping edits cannot happen for distinct scalars; refuse rather than corrupt.
            return Err(vec![ConfigError::at(
                "",
                "internal error while interpolating",
            )]);
        }
        out.push_str(text.get(pos..start).unwrap_or_default());
        out.push_str(&repl);
        pos = end;
    }
    out.push_str(text.get(pos..).unwrap_or_default());
    Ok(Some(out))
}

/// The byte range to replace and the double-quoted text that replaces it, taking the same
/// number of lines.
fn replacement(text: &str, site: &ScalarSite, value: &str) -> Option<(usize, usize, String)> {
    let mut start = site.start;
    if matches!(site.style, ScalarStyle::Literal | ScalarStyle::Folded) {
        // The span of a block scalar starts at its content; the `|`/`>` header precedes it.
        let between = text.get(site.header_search_from..site.start)?;
        let header = between.find(['|', '>'])?;
        start = site.header_search_from + header;
    }
    let original = text.get(start..site.end)?;
    let body = original.trim_end_matches([' ', '\t', '\r', '\n']);
    let trailing = &original[body.len()..];
    let newlines = body.matches('\n').count();

    let mut repl = String::with_capacity(value.len() + 2 + newlines * (site.column + 2));
    repl.push('"');
    for c in value.chars() {
        match c {
            '"' => repl.push_str("\\\""),
            '\\' => repl.push_str("\\\\"),
            '\n' => repl.push_str("\\n"),
            '\r' => repl.push_str("\\r"),
            '\t' => repl.push_str("\\t"),
            // Not YAML-printable, or a line/byte-order mark some readers treat specially.
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                repl.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => repl.push(c),
        }
    }
    // An escaped line break contributes nothing to a double-quoted scalar, and the indentation
    // after it is stripped; the column of the original start is always deep enough.
    let indent = " ".repeat(site.column.max(1));
    for _ in 0..newlines {
        repl.push_str("\\\n");
        repl.push_str(&indent);
    }
    repl.push('"');
    repl.push_str(trailing);
    Some((start, site.end, repl))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        assert_eq!(
            interpolate("http://${HOST}:${PORT}", &env).unwrap(),
            "http://example.com:8080"
        );
        assert_eq!(interpolate("${MISSING:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
        assert_eq!(interpolate("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(interpolate("${HOST:-other}", &env).unwrap(), "example.com");
        assert_eq!(interpolate("a$b $ c$", &env).unwrap(), "a$b $ c$");
        assert_eq!(interpolate("$${HOST}", &env).unwrap(), "${HOST}");
        assert_eq!(interpolate("$$x", &env).unwrap(), "$$x");
    }

    proptest::proptest! {
        /// Whatever a variable holds arrives verbatim in the string it was referenced from,
        /// and the document keeps its shape.
        #[test]
        fn any_value_stays_inside_its_string(value in "\\PC*|[\\x00-\\x7f\\u{85}\\u{2028}\\u{feff}\\u{fffe}]{0,40}", style in 0..3usize) {
            let reference = match style {
                0 => "${V}".to_owned(),
                1 => "\"${V}\"".to_owned(),
                _ => "|-\n    ${V}".to_owned(),
            };
            let text = format!("listeners:\n  - name: x\n    addr: 0.0.0.0:1\nadmin:\n  token: {reference}\nroutes: []\n");
            let lookup = |name: &str| (name == "V").then(|| value.clone());
            let loaded = crate::load_str(&text, &lookup);
            let loaded = loaded.map_err(|e| e.to_string());
            let config = loaded.expect("loads").config;
            let expected = if value.is_empty() { None } else { Some(value.clone()) };
            proptest::prop_assert_eq!(config.admin.token, expected);
            proptest::prop_assert_eq!(config.listeners.len(), 1);
        }
    }

    #[test]
    fn rejects_bad_references() {
        assert!(interpolate("${MISSING}", &env)
            .unwrap_err()
            .contains("`MISSING` is not set"));
        assert!(interpolate("${HOST", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(interpolate("${}", &env)
            .unwrap_err()
            .contains("invalid variable"));
        assert!(interpolate("${1A}", &env)
            .unwrap_err()
            .contains("invalid variable"));
        assert!(interpolate("${A-b}", &env)
            .unwrap_err()
            .contains("invalid variable"));
        assert!(interpolate("${A:-${B}}", &env)
            .unwrap_err()
            .contains("nested"));
    }
}
