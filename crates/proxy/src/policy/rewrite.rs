//! Path rewriting: `strip_prefix` on a segment boundary, then an optional `path` template
//! filled from the route's captured params. The query string is carried over unchanged.

use gatehouse_core::router::Params;
use gatehouse_core::snapshot::Rewrite;

/// Returns the upstream path-and-query.
pub fn upstream_path(
    rewrite: &Rewrite,
    path: &str,
    query: Option<&str>,
    params: &Params<'_>,
) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 8);
    if let Some(t) = &rewrite.path {
        t.render(params, &mut out);
    } else {
        let mut p = path;
        if let Some(prefix) = &rewrite.strip_prefix {
            let prefix = prefix.trim_end_matches('/');
            if let Some(rest) = p.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    p = rest;
                }
            }
        }
        if !p.starts_with('/') {
            out.push('/');
        }
        out.push_str(p);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
