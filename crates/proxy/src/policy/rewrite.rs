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
        // A template may carry its own query (`/reviews?restaurant={id}`): the client's
        // parameters are appended to it rather than starting a second `?`.
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::router::{PathPattern, RouteMatch, RouteSpec, Router};
    use gatehouse_core::snapshot::Template;

    fn with_params(pattern: &str, path: &str, f: impl FnOnce(&Params<'_>)) {
        let router =
            Router::build(&[RouteSpec::new(PathPattern::Params(pattern.into()))]).expect("router");
        match router.find(None, path, &http::Method::GET, &http::HeaderMap::new()) {
            RouteMatch::Found { params, .. } => f(&params),
            _ => panic!("no match"),
        }
    }

    #[test]
    fn template_with_query_merges_client_query() {
        with_params("/r/{id}", "/r/7", |p| {
            let rw = Rewrite {
                strip_prefix: None,
                path: Some(Template::parse("/reviews?restaurant={id}")),
            };
            assert_eq!(
                upstream_path(&rw, "/r/7", Some("page=2"), p),
                "/reviews?restaurant=7&page=2"
            );
            assert_eq!(upstream_path(&rw, "/r/7", None, p), "/reviews?restaurant=7");
        });
    }

    #[test]
    fn strip_prefix_on_segment_boundary_only() {
        with_params("/x/{id}", "/x/1", |p| {
            let rw = Rewrite {
                strip_prefix: Some("/api".into()),
                path: None,
            };
            assert_eq!(upstream_path(&rw, "/api/a", None, p), "/a");
            assert_eq!(upstream_path(&rw, "/api", Some("q=1"), p), "/?q=1");
            assert_eq!(upstream_path(&rw, "/apix/a", None, p), "/apix/a");
        });
    }
}
