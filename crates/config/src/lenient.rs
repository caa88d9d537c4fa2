//! Tolerance for `{...}` in unquoted values inside flow collections.
//!
//! In YAML, `{` and `}` end a plain scalar inside `{ ... }` / `[ ... ]`, so the SPEC.md style
//! `match: { path: /users/{id} }` or `targets: [{ url: ${URL} }]` is a syntax error for any
//! conforming parser. Path parameters and `${ENV}` references are central to this config, so when
//! (and only when) the strict parse fails, we retry once with such scalars wrapped in double
//! quotes. A document that parses strictly is never touched, so this cannot change the meaning
//! of valid YAML; if the retry fails too, the original syntax error is reported.
//!
//! Quoting keeps every line where it was; columns after a quoted value on the same line move by
//! two.

use std::collections::HashMap;

use crate::source_map::Location;

/// Where quotes were inserted: line -> 1-based columns (in the quoted text) of inserted `"`.
#[derive(Debug, Default, Clone)]
pub(crate) struct ColumnFix {
    inserted: HashMap<usize, Vec<usize>>,
}

impl ColumnFix {
    /// Maps a position in the quoted text back to the user's text.
    pub(crate) fn fix(&self, loc: Location) -> Location {
        let shift = self
            .inserted
            .get(&loc.line)
            .map_or(0, |cols| cols.iter().filter(|&&c| c < loc.column).count());
        Location {
            line: loc.line,
            column: loc.column - shift,
        }
    }
}

/// Returns the text with brace-containing plain scalars in flow collections quoted, or None when
/// there is nothing to quote.
pub(crate) fn quote_flow_braces(text: &str) -> Option<(String, ColumnFix)> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut depth = 0usize;
    let mut fix = ColumnFix::default();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let cols = quote_line(line, &mut depth, &mut out);
        if !cols.is_empty() {
            fix.inserted.insert(index + 1, cols);
        }
    }
    (!fix.inserted.is_empty()).then_some((out, fix))
}

/// Quotes one line into `out`; returns the 1-based columns of the inserted quotes.
fn quote_line(line: &str, depth: &mut usize, out: &mut String) -> Vec<usize> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let ch = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte = |i: usize| chars.get(i).map_or(line.len(), |&(b, _)| b);
    let is_space = |c: Option<char>| matches!(c, None | Some(' ' | '\t' | '\r' | '\n'));
    let mut quotes: Vec<(usize, usize)> = Vec::new();
    let mut token_start = true;
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        match c {
            '#' if i == 0 || is_space(ch(i - 1)) => break,
            '"' => {
                i += 1;
                while i < n && chars[i].1 != '"' {
                    i += if chars[i].1 == '\\' { 2 } else { 1 };
                }
                token_start = false;
            }
            '\'' => {
                i += 1;
                while i < n {
                    if chars[i].1 == '\'' {
                        if ch(i + 1) == Some('\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
                token_start = false;
            }
            '{' | '[' if token_start => {
                *depth += 1;
            }
            '}' | ']' if *depth > 0 => {
                *depth -= 1;
                token_start = false;
            }
            ',' if *depth > 0 => token_start = true,
            ':' | '-' | '?' if is_space(ch(i + 1)) => token_start = true,
            ' ' | '\t' | '\r' | '\n' => {}
            _ if *depth > 0 && token_start && !"&*!|>%@`".contains(c) => {
                let start = i;
                let mut has_group = false;
                while i < n {
                    let cj = chars[i].1;
                    if cj == '{' {
                        let close = (i + 1..n).find(|&k| matches!(chars[k].1, '{' | '}' | '\n'));
                        match close {
                            Some(k) if chars[k].1 == '}' => {
                                has_group = true;
                                i = k + 1;
                                continue;
                            }
                            _ => break,
                        }
                    }
                    let ends_key = cj == ':'
                        && (is_space(ch(i + 1))
                            || matches!(ch(i + 1), Some(',' | '[' | ']' | '{' | '}')));
                    if matches!(cj, ',' | '}' | ']' | '\r' | '\n')
                        || ends_key
                        || (cj == '#' && is_space(ch(i.wrapping_sub(1))))
                    {
                        break;
                    }
                    i += 1;
                }
                let mut end = i;
                while end > start && is_space(ch(end - 1)) {
                    end -= 1;
                }
                if has_group {
                    quotes.push((start, end));
                }
                token_start = false;
                continue;
            }
            _ => token_start = false,
        }
        i += 1;
    }
    let mut pos = 0;
    let mut cols = Vec::with_capacity(quotes.len() * 2);
    for (k, &(s, e)) in quotes.iter().enumerate() {
        let (bs, be) = (byte(s), byte(e));
        out.push_str(&line[pos..bs]);
        out.push('"');
        out.push_str(&line[bs..be].replace('\\', "\\\\").replace('"', "\\\""));
        out.push('"');
        pos = be;
        // Character index s becomes s + 2k in the output (k earlier pairs); +1 for 1-based.
        cols.push(s + 2 * k + 1);
        cols.push(e + 2 * k + 2);
    }
    out.push_str(&line[pos..]);
    cols
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quotes_params_and_env_refs_in_flow_collections() {
        let text = "\
a: { path: /users/{id}, methods: [GET] }
b: { strip_prefix: /api, path: /v2/users/{id} }
c: [{ url: ${URL:-http://x:1}, weight: 2 }, ${X}]
d: /block/{id}
e: \"{ quoted: /x/{id} }\"
f: {
  path: /multi/{line}
}
";
        let (out, fix) = quote_flow_braces(text).unwrap();
        // `methods` on line 1 moved right by the two quotes around `/users/{id}`.
        assert_eq!(
            fix.fix(Location {
                line: 1,
                column: 27
            }),
            Location {
                line: 1,
                column: 25
            }
        );
        assert_eq!(
            fix.fix(Location {
                line: 1,
                column: 12
            }),
            Location {
                line: 1,
                column: 12
            }
        );
        assert_eq!(
            fix.fix(Location {
                line: 1,
                column: 13
            }),
            Location {
                line: 1,
                column: 12
            }
        );
        assert_eq!(
            out,
            "\
a: { path: \"/users/{id}\", methods: [GET] }
b: { strip_prefix: /api, path: \"/v2/users/{id}\" }
c: [{ url: \"${URL:-http://x:1}\", weight: 2 }, \"${X}\"]
d: /block/{id}
e: \"{ quoted: /x/{id} }\"
f: {
  path: \"/multi/{line}\"
}
"
        );
    }

    #[test]
    fn nothing_to_quote() {
        assert!(quote_flow_braces("a: { b: c }\nd: /x/{id}\n").is_none());
    }
}
