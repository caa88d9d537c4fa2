//! Maps YAML paths (`routes[2].match.path`) to source positions.
//!
//! serde never tells a `Deserialize` impl where it is in the document, so semantic validation
//! (which runs on the typed model) could not otherwise say which line is wrong. We therefore walk
//! the parser's event stream once, next to deserialization, and record where every node and
//! every mapping key starts. The same walk finds the scalars that need `${...}` interpolation.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, ScanError, Span};

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Appends a mapping key to a YAML path: `a` + `b` = `a.b`. Keys that would make the path
/// ambiguous (dots, brackets, spaces, empty) are written `a["b.c"]`.
pub fn push_key(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let seg = if simple {
        key.to_owned()
    } else {
        let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
        return format!("{path}[\"{escaped}\"]");
    };
    if path.is_empty() {
        seg
    } else {
        format!("{path}.{seg}")
    }
}

/// Appends a sequence index to a YAML path: `routes` + 2 = `routes[2]`.
pub fn push_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// What a deserializer error position refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PosTarget {
    Node,
    Key,
    Mapping,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the node itself starts (for a block mapping: its first key).
    node: Location,
    /// Where its key starts, when the node is a mapping value.
    key: Option<Location>,
    /// Whether the node is a sequence or mapping.
    collection: bool,
}

/// YAML path -> position of that node in the source text.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    entries: HashMap<String, Entry>,
}

impl SourceMap {
    /// Position of the node at `yaml_path` (`""` is the document root). For a collection that is
    /// a mapping value this is the position of its key (`match:`), which is the line users look
    /// for; otherwise it is the node itself.
    pub fn locate(&self, yaml_path: &str) -> Option<Location> {
        self.entries
            .get(yaml_path)
            .map(|e| match (e.collection, e.key) {
                (true, Some(key)) => key,
                _ => e.node,
            })
    }

    /// Like [`SourceMap::locate`], but falls back to the closest ancestor that is present in the
    /// file (a default value or a missing field has no position of its own). The document root
    /// is not used as a fallback: it would point at line 1 and mislead.
    pub fn locate_nearest(&self, yaml_path: &str) -> Option<Location> {
        let mut path = yaml_path;
        loop {
            if path.is_empty() {
                return None;
            }
            if let Some(loc) = self.locate(path) {
                return Some(loc);
            }
            path = parent_path(path)?;
        }
    }

    /// Position of the key of the mapping entry at `yaml_path` (None for sequence items, the
    /// root, or paths not in the file).
    pub fn locate_key(&self, yaml_path: &str) -> Option<Location> {
        self.entries.get(yaml_path).and_then(|e| e.key)
    }

    /// An error at `yaml_path` located in this file (for checks done after loading, e.g. while
    /// compiling the runtime snapshot).
    pub fn error(&self, yaml_path: &str, message: impl Into<String>) -> crate::ConfigError {
        crate::ConfigError {
            path: yaml_path.to_owned(),
            location: self.locate_nearest(yaml_path),
            message: message.into(),
        }
    }

    /// Whether `yaml_path` was written in the file.
    pub fn contains(&self, yaml_path: &str) -> bool {
        self.entries.contains_key(yaml_path)
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The YAML path of the node at a position reported by the deserializer. Errors about keys
    /// (`unknown field`, duplicate keys) point at the key; `missing field` points at the start
    /// of the mapping (its first key for flow mappings too); everything else at a node.
    /// Falls back to the last node that starts before `at`.
    pub(crate) fn path_at(&self, at: Location, target: PosTarget) -> Option<String> {
        let deepest = |pick: &dyn Fn(&Entry) -> bool| {
            self.entries
                .iter()
                .filter(|(_, e)| pick(e))
                .max_by(|(pa, _), (pb, _)| pa.len().cmp(&pb.len()).then_with(|| pb.cmp(pa)))
                .map(|(p, _)| p.clone())
        };
        let by_key = || deepest(&|e: &Entry| e.key == Some(at));
        let by_node = || deepest(&|e: &Entry| e.node == at);
        let exact = match target {
            PosTarget::Key => by_key().or_else(by_node),
            PosTarget::Node => by_node().or_else(by_key),
            PosTarget::Mapping => deepest(&|e: &Entry| e.collection && e.node == at)
                .or_else(|| by_key().and_then(|p| parent_path(&p).map(str::to_owned))),
        };
        if exact.is_some() {
            return exact;
        }
        self.entries
            .iter()
            .filter_map(|(p, e)| {
                let start = e.key.unwrap_or(e.node);
                (start <= at).then_some((start, p))
            })
            .max_by(|(la, pa), (lb, pb)| la.cmp(lb).then_with(|| pa.len().cmp(&pb.len())))
            .map(|(_, p)| p.clone())
    }

    /// Rewrites every recorded position (used when the parsed text differs from the user's).
    pub(crate) fn map_locations(&mut self, f: impl Fn(Location) -> Location) {
        for e in self.entries.values_mut() {
            e.node = f(e.node);
            e.key = e.key.map(&f);
        }
    }

    fn insert(&mut self, path: String, entry: Entry) {
        // With merge keys or duplicate keys the first occurrence wins; the deserializer reports
        // duplicates itself.
        self.entries.entry(path).or_insert(entry);
    }
}

/// The parent of a YAML path: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``.
pub(crate) fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        // `[2]` or `["a.b"]`: find the matching `[` (a quoted key may contain brackets).
        let bytes = path.as_bytes();
        let mut i = path.len() - 1;
        let quoted = path.ends_with("\"]");
        loop {
            if i == 0 {
                return Some("");
            }
            i -= 1;
            if bytes[i] == b'[' && (!quoted || bytes.get(i + 1) == Some(&b'"')) {
                // For quoted keys, make sure the quote after `[` is not escaped content.
                if !quoted || is_unescaped_open(path, i) {
                    return Some(&path[..i]);
                }
            }
        }
    }
    match path.rfind(['.', ']']) {
        Some(i) if path.as_bytes()[i] == b'.' => Some(&path[..i]),
        Some(i) => Some(&path[..=i]),
        None => Some(""),
    }
}

/// For `a["x[\"y"]`, whether the `[` at `i` opens the final quoted segment.
fn is_unescaped_open(path: &str, i: usize) -> bool {
    let seg = &path[i + 2..path.len() - 2];
    let mut escaped = false;
    for c in seg.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return false,
            _ => {}
        }
    }
    !escaped
}

/// A scalar mapping/sequence value that mentions `$`, found while walking the document.
#[derive(Debug, Clone)]
pub(crate) struct ScalarSite {
    pub path: String,
    pub value: String,
    pub style: ScalarStyle,
    /// Byte range of the scalar text in the source (for block scalars: without the `|`/`>`
    /// header; `header_search_from` tells where to look for it).
    pub start: usize,
    pub end: usize,
    pub header_search_from: usize,
    /// 0-based column of the scalar start.
    pub column: usize,
}

pub(crate) struct Walk {
    pub map: SourceMap,
    pub scalars: Vec<ScalarSite>,
}

enum Frame {
    Seq {
        path: String,
        next: usize,
    },
    Map {
        path: String,
        key: Option<(String, Location)>,
    },
    /// Inside a complex (collection) mapping key: nothing in here has a path.
    Skip,
}

enum Node<'a> {
    Scalar(&'a str),
    Collection,
    Alias,
}

/// Position of the `|` / `>` indicator of a block scalar whose content span is `span`.
fn block_header_location(text: &str, search_from: usize, span: &Span) -> Option<Location> {
    let start = span.byte_range()?.start;
    let offset = search_from + text.get(search_from..start)?.find(['|', '>'])?;
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    })
}

fn location(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Walks the event stream of `text` and builds the source map.
pub(crate) fn walk(text: &str) -> Result<Walk, ScanError> {
    let mut map = SourceMap::default();
    let mut scalars = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut prev_end = 0usize;
    let mut documents = 0usize;

    // Comments would sit between a block scalar's `|` header and its content event and hide
    // the header from the interpolation rewrite; they carry no data.
    let mut options = Options::default();
    options.emit_comments = false;
    for item in Parser::new_from_str_with_options(text, options) {
        let (event, span) = item?;
        let node = match &event {
            Event::Scalar(value, ..) => Some(Node::Scalar(value)),
            Event::SequenceStart(..) | Event::MappingStart(..) => Some(Node::Collection),
            Event::Alias(_) | Event::UnresolvedAlias(_) => Some(Node::Alias),
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                None
            }
            Event::DocumentStart(..) => {
                documents += 1;
                // Only the first document is the config; the deserializer rejects more.
                if documents > 1 {
                    break;
                }
                None
            }
            _ => None,
        };
        if let Some(node) = node {
            let mut loc = location(&span);
            if let Event::Scalar(_, ScalarStyle::Literal | ScalarStyle::Folded, ..) = &event {
                // The span starts at the content; users expect the `|` / `>` line.
                if let Some(header) = block_header_location(text, prev_end, &span) {
                    loc = header;
                }
            }
            let is_collection = matches!(node, Node::Collection);
            // Work out the path of this node (None: it is a key or inside a complex key).
            let assigned: Option<(String, Option<Location>)> = match stack.last_mut() {
                None => Some((String::new(), None)),
                Some(Frame::Skip) => None,
                Some(Frame::Seq { path, next }) => {
                    let p = push_index(path, *next);
                    *next += 1;
                    Some((p, None))
                }
                Some(Frame::Map { path, key }) => match key.take() {
                    Some((k, key_loc)) => Some((push_key(path, &k), Some(key_loc))),
                    None => {
                        let k = match &node {
                            Node::Scalar(v) => (*v).to_owned(),
                            Node::Collection => "<complex key>".to_owned(),
                            Node::Alias => "<alias>".to_owned(),
                        };
                        *key = Some((k, loc));
                        None
                    }
                },
            };
            if let Some((path, key_loc)) = &assigned {
                map.insert(
                    path.clone(),
                    Entry {
                        node: loc,
                        key: *key_loc,
                        collection: is_collection,
                    },
                );
                if let (Node::Scalar(value), Some(range)) = (&node, span.byte_range()) {
                    if value.contains('$') {
                        if let Event::Scalar(_, style, ..) = &event {
                            scalars.push(ScalarSite {
                                path: path.clone(),
                                value: (*value).to_owned(),
                                style: *style,
                                start: range.start,
                                end: range.end,
                                header_search_from: prev_end,
                                column: span.start.col(),
                            });
                        }
                    }
                }
            }
            if is_collection {
                stack.push(match (&assigned, &event) {
                    (Some((path, _)), Event::SequenceStart(..)) => Frame::Seq {
                        path: path.clone(),
                        next: 0,
                    },
                    (Some((path, _)), Event::MappingStart(..)) => Frame::Map {
                        path: path.clone(),
                        key: None,
                    },
                    _ => Frame::Skip,
                });
            }
        }
        if let Some(range) = span.byte_range() {
            prev_end = prev_end.max(range.end);
        }
    }
    Ok(Walk { map, scalars })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn loc(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn paths_are_formatted() {
        assert_eq!(push_key("", "routes"), "routes");
        assert_eq!(push_index("routes", 2), "routes[2]");
        assert_eq!(push_key("routes[2]", "match"), "routes[2].match");
        assert_eq!(push_key("upstreams", "users.v2"), "upstreams[\"users.v2\"]");
        assert_eq!(push_key("a", "x\"y"), "a[\"x\\\"y\"]");
    }

    #[test]
    fn parents() {
        assert_eq!(parent_path("routes[2].match.path"), Some("routes[2].match"));
        assert_eq!(parent_path("routes[2].match"), Some("routes[2]"));
        assert_eq!(parent_path("routes[2]"), Some("routes"));
        assert_eq!(parent_path("routes"), Some(""));
        assert_eq!(parent_path(""), None);
        assert_eq!(
            parent_path("upstreams[\"a.b\"].targets"),
            Some("upstreams[\"a.b\"]")
        );
        assert_eq!(parent_path("upstreams[\"a.b\"]"), Some("upstreams"));
        assert_eq!(parent_path("a[\"x[\\\"y\"]"), Some("a"));
    }

    #[test]
    fn maps_block_and_flow_nodes() {
        let text = "\
listeners:
  - name: public
    addr: 0.0.0.0:8080
routes:
  - name: r
    match: { path: /a, methods: [GET, PUT] }
    upstream: u
upstreams:
  users.v2:
    targets:
      - url: http://a:1
";
        let map = walk(text).unwrap().map;
        assert_eq!(map.locate("listeners"), loc(1, 1));
        assert_eq!(map.locate("listeners[0]"), loc(2, 5));
        assert_eq!(map.locate("listeners[0].addr"), loc(3, 11));
        assert_eq!(map.locate("routes[0].match"), loc(6, 5));
        assert_eq!(map.locate("routes[0].match.path"), loc(6, 20));
        assert_eq!(map.locate("routes[0].match.methods[1]"), loc(6, 39));
        assert_eq!(
            map.locate("upstreams[\"users.v2\"].targets[0].url"),
            loc(11, 14)
        );
        assert_eq!(map.locate_nearest("routes[0].match.hosts"), loc(6, 5));
        assert_eq!(map.locate_nearest("admin.addr"), None);
        assert_eq!(map.locate("nope"), None);
    }

    #[test]
    fn reverse_lookup() {
        let text = "items:\n  - port: 8080\n    bogus: 1\n";
        let map = walk(text).unwrap().map;
        let at = |line, column, target| map.path_at(Location { line, column }, target).unwrap();
        assert_eq!(at(2, 5, PosTarget::Node), "items[0]");
        assert_eq!(at(2, 5, PosTarget::Mapping), "items[0]");
        assert_eq!(at(2, 5, PosTarget::Key), "items[0].port");
        assert_eq!(at(3, 5, PosTarget::Key), "items[0].bogus");
        assert_eq!(at(2, 11, PosTarget::Node), "items[0].port");
        let map = walk("a: { b: 1 }\n").unwrap().map;
        // Flow mappings are reported at their first key.
        assert_eq!(
            map.path_at(Location { line: 1, column: 6 }, PosTarget::Mapping)
                .unwrap(),
            "a"
        );
    }

    #[test]
    fn complex_keys_and_aliases_do_not_break_the_walk() {
        let text = "a: &x {b: 1}\n? [k]\n: v\nc: *x\nd: 2\n";
        let map = walk(text).unwrap().map;
        assert_eq!(map.locate("a.b"), loc(1, 11));
        assert_eq!(map.locate("c"), loc(4, 4));
        assert_eq!(map.locate("d"), loc(5, 4));
    }
}
