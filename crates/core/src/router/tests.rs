use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn exact(p: &str) -> RouteSpec {
    RouteSpec::new(PathPattern::Exact(p.into()))
}
fn prefix(p: &str) -> RouteSpec {
    RouteSpec::new(PathPattern::Prefix(p.into()))
}
fn params(p: &str) -> RouteSpec {
    RouteSpec::new(PathPattern::Params(p.into()))
}
fn regex(p: &str) -> RouteSpec {
    RouteSpec::new(PathPattern::Regex(p.into()))
}

trait SpecExt {
    fn hosts(self, h: &[&str]) -> Self;
    fn methods(self, m: &[Method]) -> Self;
    fn header(self, n: &'static str, v: &'static str) -> Self;
}

impl SpecExt for RouteSpec {
    fn hosts(mut self, h: &[&str]) -> Self {
        self.hosts = h.iter().map(|s| s.to_string()).collect();
        self
    }
    fn methods(mut self, m: &[Method]) -> Self {
        self.methods = Some(m.to_vec());
        self
    }
    fn header(mut self, n: &'static str, v: &'static str) -> Self {
        self.headers
            .push((HeaderName::from_static(n), HeaderValue::from_static(v)));
        self
    }
}

fn build(specs: &[RouteSpec]) -> Router {
    match Router::build(specs) {
        Ok(r) => r,
        Err(e) => panic!("build failed: {e:?}"),
    }
}

fn build_err(specs: &[RouteSpec]) -> Vec<RouterError> {
    match Router::build(specs) {
        Ok(_) => panic!("expected a build error"),
        Err(e) => e,
    }
}

fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    h
}

/// The matched route index, or `None` for 404/405.
fn f(r: &Router, host: Option<&str>, path: &str, m: Method) -> Option<usize> {
    fh(r, host, path, m, &HeaderMap::new())
}

fn fh(r: &Router, host: Option<&str>, path: &str, m: Method, h: &HeaderMap) -> Option<usize> {
    match r.find(host, path, &m, h) {
        RouteMatch::Found { route, .. } => Some(route),
        _ => None,
    }
}

#[test]
fn exact_match() {
    let r = build(&[exact("/health"), exact("/")]);
    assert_eq!(f(&r, None, "/health", Method::GET), Some(0));
    assert_eq!(f(&r, None, "/", Method::GET), Some(1));
    assert_eq!(f(&r, None, "/health/", Method::GET), None);
    assert_eq!(f(&r, None, "/healthz", Method::GET), None);
}

#[test]
fn prefix_match_on_segment_boundaries() {
    let r = build(&[prefix("/admin"), prefix("/api/v1"), prefix("/api")]);
    for p in ["/admin", "/admin/", "/admin/x", "/admin/x/y"] {
        assert_eq!(f(&r, None, p, Method::GET), Some(0), "{p}");
    }
    // P8
    assert_eq!(f(&r, None, "/administrator", Method::GET), None);
    assert_eq!(f(&r, None, "/admin.", Method::GET), None);
    assert_eq!(f(&r, None, "/apix", Method::GET), None);
    // longest prefix wins
    assert_eq!(f(&r, None, "/api/v1/x", Method::GET), Some(1));
    assert_eq!(f(&r, None, "/api/v1", Method::GET), Some(1));
    assert_eq!(f(&r, None, "/api/v2", Method::GET), Some(2));
    assert_eq!(f(&r, None, "/api/v10", Method::GET), Some(2));
}

#[test]
fn prefix_rest() {
    let r = build(&[prefix("/api"), prefix("/*")]);
    let rest = |p: &str| match r.find(None, p, &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { params, .. } => params.rest().map(str::to_owned),
        _ => None,
    };
    assert_eq!(rest("/api").as_deref(), Some(""));
    assert_eq!(rest("/api/").as_deref(), Some("/"));
    assert_eq!(rest("/api/x/y").as_deref(), Some("/x/y"));
    assert_eq!(rest("/other").as_deref(), Some("/other"));
    assert_eq!(rest("/").as_deref(), Some("/"));
}

#[test]
fn root_prefix_matches_everything() {
    for root in ["", "/", "/*"] {
        let r = build(&[prefix(root)]);
        for p in ["/", "/a", "/a/b/", "/x;y"] {
            assert_eq!(f(&r, None, p, Method::GET), Some(0), "{root:?} {p}");
        }
    }
}

#[test]
fn params_match() {
    let r = build(&[
        params("/users/{id}"),
        params("/users/{id}/orders/{order}"),
        params("/users/me/orders/{order}"),
    ]);
    match r.find(None, "/users/42", &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { route, params } => {
            assert_eq!(route, 0);
            assert_eq!(params.get("id"), Some("42"));
            assert_eq!(params.len(), 1);
            assert_eq!(params.rest(), None);
        }
        other => panic!("{other:?}"),
    }
    match r.find(None, "/users/7/orders/9", &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { route, params } => {
            assert_eq!(route, 1);
            assert_eq!(params.get("id"), Some("7"));
            assert_eq!(params.get("order"), Some("9"));
        }
        other => panic!("{other:?}"),
    }
    // literal segment beats a parameter
    assert_eq!(f(&r, None, "/users/me/orders/9", Method::GET), Some(2));
    // exactly one non-empty segment
    assert_eq!(f(&r, None, "/users/", Method::GET), None);
    assert_eq!(f(&r, None, "/users", Method::GET), None);
    assert_eq!(f(&r, None, "/users/1/2", Method::GET), None);
    assert_eq!(f(&r, None, "/users/1/", Method::GET), None);
}

#[test]
fn params_many_spill() {
    let pat = "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}";
    let r = build(&[params(pat)]);
    match r.find(
        None,
        "/1/2/3/4/5/6/7/8/9/10",
        &Method::GET,
        &HeaderMap::new(),
    ) {
        RouteMatch::Found { params, .. } => {
            assert_eq!(params.len(), 10);
            assert_eq!(params.get("a"), Some("1"));
            assert_eq!(params.get("h"), Some("8"));
            assert_eq!(params.get("j"), Some("10"));
            let v: Vec<_> = params.iter().map(|(_, v)| v).collect();
            assert_eq!(v, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn params_backtracking_across_shapes() {
    let r = build(&[params("/users/{a}/x"), params("/{a}/{b}/y")]);
    assert_eq!(f(&r, None, "/users/5/x", Method::GET), Some(0));
    assert_eq!(f(&r, None, "/users/5/y", Method::GET), Some(1));
}

#[test]
fn regex_match_and_named_groups() {
    let r = build(&[
        regex(r"^/files/(?P<name>[a-z]+)\.(?P<ext>png|jpg)$"),
        regex(r"^/files/"),
    ]);
    match r.find(None, "/files/cat.png", &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { route, params } => {
            assert_eq!(route, 0);
            assert_eq!(params.get("name"), Some("cat"));
            assert_eq!(params.get("ext"), Some("png"));
        }
        other => panic!("{other:?}"),
    }
    // declaration order among regexes
    assert_eq!(f(&r, None, "/files/cat.gif", Method::GET), Some(1));
    assert_eq!(f(&r, None, "/other", Method::GET), None);
}

#[test]
fn regex_order_is_declaration_order() {
    let r = build(&[regex("^/a"), regex("^/a/b$")]);
    assert_eq!(f(&r, None, "/a/b", Method::GET), Some(0));
}

#[test]
fn precedence_between_kinds() {
    let r = build(&[
        regex("^/users/.*$"),
        params("/users/{id}"),
        prefix("/users"),
        exact("/users/me"),
    ]);
    assert_eq!(f(&r, None, "/users/me", Method::GET), Some(3));
    assert_eq!(f(&r, None, "/users/42", Method::GET), Some(2)); // prefix > params
    let r = build(&[
        regex("^/users/.*$"),
        params("/users/{id}"),
        exact("/users/me"),
    ]);
    assert_eq!(f(&r, None, "/users/42", Method::GET), Some(1)); // params > regex
    assert_eq!(f(&r, None, "/users/42/x", Method::GET), Some(0));
}

#[test]
fn path_kind_beats_host_specificity() {
    let r = build(&[prefix("/*").hosts(&["api.example.com"]), exact("/health")]);
    assert_eq!(
        f(&r, Some("api.example.com"), "/health", Method::GET),
        Some(1)
    );
    assert_eq!(f(&r, Some("api.example.com"), "/x", Method::GET), Some(0));
    assert_eq!(f(&r, Some("other.com"), "/x", Method::GET), None);
    assert_eq!(f(&r, None, "/x", Method::GET), None);
}

#[test]
fn longer_prefix_beats_host_specificity() {
    let r = build(&[
        prefix("/api").hosts(&["api.example.com"]),
        prefix("/api/v1"),
    ]);
    assert_eq!(
        f(&r, Some("api.example.com"), "/api/v1/x", Method::GET),
        Some(1)
    );
    assert_eq!(
        f(&r, Some("api.example.com"), "/api/v2", Method::GET),
        Some(0)
    );
}

#[test]
fn host_specificity() {
    let r = build(&[
        prefix("/api"),
        prefix("/api").hosts(&["*.com"]),
        prefix("/api").hosts(&["*.example.com"]),
        prefix("/api").hosts(&["api.example.com"]),
    ]);
    let g = |h: Option<&str>| f(&r, h, "/api/x", Method::GET);
    assert_eq!(g(Some("api.example.com")), Some(3));
    assert_eq!(g(Some("a.example.com")), Some(2));
    assert_eq!(g(Some("a.b.example.com")), Some(2));
    assert_eq!(g(Some("example.com")), Some(1)); // `*.com`, not `*.example.com`
    assert_eq!(g(Some("x.org")), Some(0));
    assert_eq!(g(None), Some(0));
    // defensive: case and port
    assert_eq!(g(Some("API.Example.COM:8443")), Some(3));
    assert_eq!(g(Some("api.example.com.")), Some(3));
}

#[test]
fn wildcard_hosts() {
    let r = build(&[exact("/").hosts(&["*.example.com"])]);
    assert_eq!(f(&r, Some("a.example.com"), "/", Method::GET), Some(0));
    assert_eq!(f(&r, Some("a.b.example.com"), "/", Method::GET), Some(0));
    assert_eq!(f(&r, Some("example.com"), "/", Method::GET), None);
    assert_eq!(f(&r, Some("aexample.com"), "/", Method::GET), None);
    assert_eq!(f(&r, Some(".example.com"), "/", Method::GET), None);
    assert_eq!(f(&r, None, "/", Method::GET), None);
}

#[test]
fn params_host_ordering() {
    // Shape specificity first, then host.
    let r = build(&[
        params("/{a}/{b}").hosts(&["h.com"]),
        params("/users/{id}"),
        params("/users/{id}").hosts(&["h.com"]),
    ]);
    assert_eq!(f(&r, Some("h.com"), "/users/1", Method::GET), Some(2));
    assert_eq!(f(&r, Some("x.com"), "/users/1", Method::GET), Some(1));
    assert_eq!(f(&r, Some("h.com"), "/orders/1", Method::GET), Some(0));
    // across host tables: the any-host route has the more specific shape
    let r = build(&[params("/{a}/{b}").hosts(&["h.com"]), params("/users/{id}")]);
    assert_eq!(f(&r, Some("h.com"), "/users/1", Method::GET), Some(1));
    assert_eq!(f(&r, Some("h.com"), "/orders/1", Method::GET), Some(0));
}

#[test]
fn more_conditions_first_and_fallback() {
    let r = build(&[
        prefix("/api"),
        prefix("/api").header("x-api-version", "2"),
        prefix("/api/v1").header("x-beta", "1"),
    ]);
    let h2 = hm(&[("x-api-version", "2")]);
    assert_eq!(fh(&r, None, "/api/x", Method::GET, &h2), Some(1));
    assert_eq!(
        fh(&r, None, "/api/x", Method::GET, &HeaderMap::new()),
        Some(0)
    );
    // the longer prefix requires a header: falls back to the shorter one
    assert_eq!(
        fh(&r, None, "/api/v1/x", Method::GET, &HeaderMap::new()),
        Some(0)
    );
    assert_eq!(fh(&r, None, "/api/v1/x", Method::GET, &h2), Some(1));
    assert_eq!(
        fh(&r, None, "/api/v1/x", Method::GET, &hm(&[("x-beta", "1")])),
        Some(2)
    );
    // value is exact; all values must agree
    assert_eq!(
        fh(
            &r,
            None,
            "/api/x",
            Method::GET,
            &hm(&[("x-api-version", "2 ")])
        ),
        Some(0)
    );
    assert_eq!(
        fh(
            &r,
            None,
            "/api/x",
            Method::GET,
            &hm(&[("x-api-version", "2"), ("x-api-version", "3")])
        ),
        Some(0)
    );
}

#[test]
fn param_fallback_when_best_shape_fails() {
    let r = build(&[
        params("/users/me/{x}").header("x-admin", "1"),
        params("/users/{id}/{x}").hosts(&["h.com"]),
        params("/{a}/{b}/{c}"),
    ]);
    match r.find(
        Some("h.com"),
        "/users/me/7",
        &Method::GET,
        &HeaderMap::new(),
    ) {
        RouteMatch::Found { route, params } => {
            assert_eq!(route, 1);
            assert_eq!(params.get("id"), Some("me"));
            assert_eq!(params.get("x"), Some("7"));
        }
        other => panic!("{other:?}"),
    }
    match r.find(None, "/users/me/7", &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { route, params } => {
            assert_eq!(route, 2);
            assert_eq!(params.get("a"), Some("users"));
            assert_eq!(params.get("c"), Some("7"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fh(
            &r,
            None,
            "/users/me/7",
            Method::GET,
            &hm(&[("x-admin", "1")])
        ),
        Some(0)
    );
}

#[test]
fn method_not_allowed_with_allow() {
    let r = build(&[
        exact("/x").methods(&[Method::GET]),
        exact("/x").methods(&[Method::PUT, Method::DELETE]),
        prefix("/x").methods(&[Method::POST]).header("x-k", "1"),
        params("/{a}").methods(&[Method::PATCH]),
    ]);
    let m = r.find(None, "/x", &Method::OPTIONS, &HeaderMap::new());
    match &m {
        RouteMatch::MethodNotAllowed { allow } => {
            assert_eq!(
                allow,
                &[
                    Method::GET,
                    Method::HEAD,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.allow_header().as_deref(),
        Some("GET, HEAD, PUT, PATCH, DELETE")
    );
    // with the header, POST on the prefix route is allowed too
    match r.find(None, "/x", &Method::OPTIONS, &hm(&[("x-k", "1")])) {
        RouteMatch::MethodNotAllowed { allow } => assert!(allow.contains(&Method::POST)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.find(None, "/nope/nope", &Method::GET, &HeaderMap::new()),
        RouteMatch::NotFound
    ));
    assert_eq!(f(&r, None, "/x", Method::DELETE), Some(1));
    // a route that matches on method but not header is not a 405 candidate
    let r = build(&[exact("/y").methods(&[Method::GET]).header("x-k", "1")]);
    assert!(matches!(
        r.find(None, "/y", &Method::POST, &HeaderMap::new()),
        RouteMatch::NotFound
    ));
    assert!(matches!(
        r.find(None, "/y", &Method::POST, &hm(&[("x-k", "1")])),
        RouteMatch::MethodNotAllowed { .. }
    ));
}

#[test]
fn head_allowed_where_get_is() {
    let r = build(&[exact("/a").methods(&[Method::GET])]);
    assert_eq!(f(&r, None, "/a", Method::HEAD), Some(0));
    // an explicit HEAD route is preferred over GET-implied HEAD
    let r = build(&[
        exact("/a").methods(&[Method::GET]),
        exact("/a").methods(&[Method::HEAD]),
    ]);
    assert_eq!(f(&r, None, "/a", Method::HEAD), Some(1));
    assert_eq!(f(&r, None, "/a", Method::GET), Some(0));
}

#[test]
fn collisions_detected() {
    let cases: Vec<Vec<RouteSpec>> = vec![
        vec![exact("/a"), exact("/a")],
        vec![prefix("/a"), prefix("/a/*")],
        vec![params("/u/{id}"), params("/u/{name}")],
        vec![regex("^/a$"), regex("^/a$")],
        vec![
            exact("/a").hosts(&["h.com", "x.com"]),
            exact("/a").hosts(&["x.com"]),
        ],
        vec![
            exact("/a").hosts(&["*.h.com"]),
            exact("/a").hosts(&["*.H.com"]),
        ],
        vec![
            exact("/a").methods(&[Method::GET, Method::POST]),
            exact("/a").methods(&[Method::POST]),
        ],
        vec![
            exact("/a").methods(&[Method::GET]),
            exact("/a").header("x", "1"),
        ],
        vec![exact("/a").header("x", "1"), exact("/a").header("y", "1")],
        vec![exact("/a").header("x", "1"), exact("/a").header("x", "1")],
    ];
    for (i, specs) in cases.iter().enumerate() {
        let errs = build_err(specs);
        assert_eq!(errs.len(), 1, "case {i}: {errs:?}");
        assert_eq!(errs[0].route, 1, "case {i}");
        assert_eq!(errs[0].other, Some(0), "case {i}");
        assert!(errs[0].to_string().contains("collides"), "case {i}");
    }
}

#[test]
fn non_collisions_accepted() {
    let cases: Vec<Vec<RouteSpec>> = vec![
        vec![exact("/a"), exact("/b")],
        vec![exact("/a"), prefix("/a")],
        vec![exact("/a").hosts(&["h.com"]), exact("/a")],
        vec![
            exact("/a").hosts(&["h.com"]),
            exact("/a").hosts(&["*.h.com"]),
        ],
        vec![
            exact("/a").methods(&[Method::GET]),
            exact("/a").methods(&[Method::POST]),
        ],
        vec![
            exact("/a").methods(&[Method::GET]),
            exact("/a").methods(&[Method::HEAD]),
        ],
        vec![exact("/a").header("x", "1"), exact("/a").header("x", "2")],
        vec![exact("/a").header("x", "1"), exact("/a")],
        vec![
            exact("/a").header("x", "1"),
            exact("/a").header("x", "1").header("y", "1"),
        ],
        vec![params("/u/{id}"), params("/u/{id}/x")],
        vec![params("/u/{id}"), params("/{a}/x")],
        vec![regex("^/a$"), regex("^/a$").methods(&[Method::GET])],
        vec![prefix("/a"), prefix("/a/b")],
    ];
    for (i, specs) in cases.iter().enumerate() {
        if let Err(e) = Router::build(specs) {
            panic!("case {i}: {e:?}");
        }
    }
}

#[test]
fn invalid_specs_rejected() {
    let cases: Vec<RouteSpec> = vec![
        regex("(unclosed"),
        regex("a{1000}{1000}"), // exceeds the 1 MiB size limit
        exact("relative"),
        exact("/a//b"),
        exact("/a/../b"),
        exact("/a%2e"),
        exact("/a;b"),
        prefix("/api/"),
        params("/u/{id"),
        params("/img-{id}.png"),
        params("/{1x}"),
        params("/{a}/{a}"),
        params("/{*rest}"),
        exact("/a").hosts(&["a*.com"]),
        exact("/a").hosts(&["*."]),
        exact("/a").hosts(&["h.com:80"]),
        exact("/a").hosts(&["h .com"]),
        exact("/a").hosts(&[""]),
        RouteSpec {
            methods: Some(vec![]),
            ..exact("/a")
        },
        exact("/a").header("x", "1").header("x", "2"),
    ];
    for (i, spec) in cases.into_iter().enumerate() {
        let is_prefix_slash = matches!(&spec.path, PathPattern::Prefix(p) if p == "/api/");
        let res = Router::build(std::slice::from_ref(&spec));
        if is_prefix_slash {
            // `/api/` is accepted as `/api/*`
            assert!(res.is_ok(), "case {i}");
            continue;
        }
        match res {
            Ok(_) => panic!("case {i} ({:?}) should fail", spec.path),
            Err(e) => {
                assert_eq!(e.len(), 1, "case {i}");
                assert_eq!(e[0].route, 0);
                assert_eq!(e[0].other, None);
            }
        }
    }
}

#[test]
fn errors_collected_for_all_routes() {
    let errs = build_err(&[regex("("), exact("/ok"), exact("bad")]);
    let idx: Vec<usize> = errs.iter().map(|e| e.route).collect();
    assert_eq!(idx, [0, 2]);
}

#[test]
fn params_without_braces_is_exact() {
    let r = build(&[params("/plain")]);
    assert_eq!(f(&r, None, "/plain", Method::GET), Some(0));
    assert!(Router::build(&[params("/plain"), exact("/plain")]).is_err());
}

#[test]
fn star_host_is_any_host() {
    let r = build(&[exact("/a").hosts(&["*"])]);
    assert_eq!(f(&r, None, "/a", Method::GET), Some(0));
    assert_eq!(f(&r, Some("x.org"), "/a", Method::GET), Some(0));
}

#[test]
fn explain() {
    let r = build(&[
        exact("/health"),
        prefix("/api")
            .hosts(&["*.example.com"])
            .methods(&[Method::GET]),
        params("/u/{id}").header("x-v", "2"),
        regex("^/r"),
    ]);
    let e0 = r.precedence_explain(0).unwrap_or_default();
    assert!(e0.contains("exact path `/health`"), "{e0}");
    let e1 = r.precedence_explain(1).unwrap_or_default();
    assert!(
        e1.contains("prefix `/api/*`") && e1.contains("*.example.com (wildcard)"),
        "{e1}"
    );
    assert!(e1.contains("GET (+HEAD)"), "{e1}");
    let e2 = r.precedence_explain(2).unwrap_or_default();
    assert!(
        e2.contains("parameterised") && e2.contains("x-v: 2"),
        "{e2}"
    );
    let e3 = r.precedence_explain(3).unwrap_or_default();
    assert!(e3.contains("regex"), "{e3}");
    assert!(r.precedence_explain(4).is_none());
    assert_eq!(r.len(), 4);
}

#[test]
fn p_series_on_router() {
    // With `/admin/*` and `/api/*`, the normalized route forms of the P1–P9 paths never
    // reach `/api/*` when the upstream would resolve them under `/admin`.
    let r = build(&[prefix("/admin"), prefix("/api")]);
    let route_of = |raw: &str| -> Option<Option<usize>> {
        let n = crate::normalize::normalize_path(raw).ok()?;
        Some(f(&r, None, &n.route, Method::GET))
    };
    for raw in [
        "/api/../admin/x",
        "/api/%2e%2e/admin/x",
        "/api/%2E%2E/admin/x",
        "/api/.%2e/admin/x",
        "/api/%2e./admin/x",
        "//admin/x",
        "/./admin",
        "/admin;x=1/y",
        "/admin;/y",
        "/admin%3Bx/y",
    ] {
        assert_eq!(route_of(raw), Some(Some(0)), "{raw}");
    }
    for raw in [
        "/admin%2Fx",
        "/api%2F..%2Fadmin",
        "/api%5C..",
        "/api\\..",
        "/api/..;/admin",
        "/admin%00",
        "/api//../admin",
    ] {
        assert_eq!(route_of(raw), None, "{raw} must be rejected");
    }
    assert_eq!(route_of("/api/%252e%252e/admin"), Some(Some(1))); // P3
    for raw in [
        "/ADMIN/x",
        "/Admin",
        "/administrator",
        "/admin%20",
        "/admin.",
    ] {
        assert_eq!(route_of(raw), Some(None), "{raw}");
    }
}

#[test]
fn ten_thousand_routes() {
    let mut specs = Vec::with_capacity(10_000);
    for i in 0..2_500 {
        specs.push(exact(&format!("/e/{i}")));
        specs.push(prefix(&format!("/p/{i}")));
        specs.push(params(&format!("/u/{i}/{{id}}")));
        specs.push(exact(&format!("/h/{i}")).hosts(&[&format!("h{i}.example.com")]));
    }
    let t = Instant::now();
    let r = build(&specs);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "build took {took:?}");
    assert_eq!(f(&r, None, "/e/1234", Method::GET), Some(4 * 1234));
    assert_eq!(f(&r, None, "/p/1234/x/y", Method::GET), Some(4 * 1234 + 1));
    match r.find(None, "/u/2499/abc", &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { route, params } => {
            assert_eq!(route, 4 * 2499 + 2);
            assert_eq!(params.get("id"), Some("abc"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f(&r, Some("h7.example.com"), "/h/7", Method::GET),
        Some(4 * 7 + 3)
    );
    assert_eq!(f(&r, Some("h8.example.com"), "/h/7", Method::GET), None);
    let t = Instant::now();
    for i in 0..10_000 {
        let p = format!("/p/{}/x", i % 2_500);
        assert!(f(&r, None, &p, Method::GET).is_some());
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}

// ---- model-based property test -----------------------------------------------------------

#[derive(Debug, Clone)]
struct MSpec {
    kind: u8,
    pat: String,
    hosts: Vec<&'static str>,
    methods: Option<Vec<Method>>,
    header: Option<&'static str>,
}

fn mspec_strategy() -> impl Strategy<Value = MSpec> {
    let seg = prop::sample::select(vec!["a", "b", "{x}"]);
    (
        prop::sample::select(vec![0u8, 1, 2, 2, 2, 3]),
        prop::collection::vec(seg, 0..4),
        prop::sample::select(vec![
            vec![],
            vec!["h.com"],
            vec!["*.h.com"],
            vec!["*.com"],
            vec!["h.com", "*.com"],
        ]),
        prop::sample::select(vec![
            None,
            Some(vec![Method::GET]),
            Some(vec![Method::POST]),
        ]),
        prop::sample::select(vec![None, Some("1"), Some("2")]),
        prop::sample::select(vec!["^/a", "^/a/b$", "b$", "^/(?P<n>[ab])$"]),
    )
        .prop_map(|(kind, segs, hosts, methods, header, re)| {
            let mut pat = String::new();
            let mut n = 0;
            for s in &segs {
                pat.push('/');
                if *s == "{x}" {
                    pat.push_str(&format!("{{x{n}}}"));
                    n += 1;
                } else {
                    pat.push_str(s);
                }
            }
            let kind = match kind {
                2 if n == 0 => 0,
                _ => kind,
            };
            if kind != 1 && pat.is_empty() {
                pat.push('/');
            }
            if kind == 3 {
                pat = re.to_string();
            }
            if kind == 0 || kind == 1 {
                pat = pat
                    .replace("{x0}", "a")
                    .replace("{x1}", "b")
                    .replace("{x2}", "a");
            }
            MSpec {
                kind,
                pat,
                hosts,
                methods,
                header,
            }
        })
}

fn to_spec(m: &MSpec) -> RouteSpec {
    let path = match m.kind {
        0 => PathPattern::Exact(m.pat.clone()),
        1 => PathPattern::Prefix(m.pat.clone()),
        2 => PathPattern::Params(m.pat.clone()),
        _ => PathPattern::Regex(m.pat.clone()),
    };
    let mut s = RouteSpec::new(path).hosts(&m.hosts);
    s.methods = m.methods.clone();
    if let Some(v) = m.header {
        s = s.header("x-v", v);
    }
    s
}

fn model_host_rank(entry: &str, host: Option<&str>) -> Option<usize> {
    if entry.is_empty() {
        return Some(10_000);
    }
    let h = host?;
    if let Some(suffix) = entry.strip_prefix('*') {
        (h.len() > suffix.len() && h.ends_with(suffix)).then(|| 1_000 - suffix.len())
    } else {
        (h == entry).then_some(0)
    }
}

fn model_path(m: &MSpec, path: &str) -> Option<(usize, Vec<bool>)> {
    match m.kind {
        0 => (m.pat == path).then(|| (0, vec![])),
        1 => {
            let ok = m.pat.is_empty()
                || path == m.pat
                || path
                    .strip_prefix(m.pat.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            ok.then(|| (usize::MAX - m.pat.len(), vec![]))
        }
        2 => {
            let ps: Vec<&str> = m.pat[1..].split('/').collect();
            let xs: Vec<&str> = path[1..].split('/').collect();
            if ps.len() != xs.len() {
                return None;
            }
            let mut shape = vec![];
            for (p, x) in ps.iter().zip(&xs) {
                if p.starts_with('{') {
                    if x.is_empty() {
                        return None;
                    }
                    shape.push(true);
                } else if p == x {
                    shape.push(false);
                } else {
                    return None;
                }
            }
            Some((0, shape))
        }
        _ => Regex::new(&m.pat)
            .ok()
            .filter(|re| re.is_match(path))
            .map(|_| (0, vec![])),
    }
}

/// Brute-force reference: every (route, host entry) candidate sorted by the documented
/// precedence key.
fn model_find(
    ms: &[MSpec],
    host: Option<&str>,
    path: &str,
    method: &Method,
    hv: Option<&str>,
) -> Option<usize> {
    type Key = (u8, usize, Vec<bool>, usize, usize, Reverse<usize>, usize);
    let mut cands: Vec<(Key, usize)> = vec![];
    for (i, m) in ms.iter().enumerate() {
        let Some((sub, shape)) = model_path(m, path) else {
            continue;
        };
        let entries: Vec<&str> = if m.hosts.is_empty() {
            vec![""]
        } else {
            m.hosts.clone()
        };
        for e in entries {
            let Some(rank) = model_host_rank(e, host) else {
                continue;
            };
            let pat_order = if m.kind == 3 {
                ms.iter()
                    .enumerate()
                    .filter(|(_, o)| {
                        o.kind == 3
                            && o.pat == m.pat
                            && (o.hosts.contains(&e) || (e.is_empty() && o.hosts.is_empty()))
                    })
                    .map(|(j, _)| j)
                    .min()
                    .unwrap_or(i)
            } else {
                0
            };
            let conds = usize::from(!m.hosts.is_empty())
                + usize::from(m.methods.is_some())
                + usize::from(m.header.is_some());
            let key = (
                m.kind.min(3),
                sub,
                shape.clone(),
                rank,
                pat_order,
                Reverse(conds),
                i,
            );
            cands.push((key, i));
        }
    }
    cands.sort();
    // regex precedence is host first, then pattern order: reorder within the regex kind
    cands.sort_by(|a, b| {
        let ka = &a.0;
        let kb = &b.0;
        if ka.0 == 3 && kb.0 == 3 {
            (ka.3, ka.4, &ka.5, ka.6).cmp(&(kb.3, kb.4, &kb.5, kb.6))
        } else {
            ka.cmp(kb)
        }
    });
    cands.into_iter().map(|(_, i)| i).find(|&i| {
        let m = &ms[i];
        let mok = m.methods.as_ref().is_none_or(|v| v.contains(method));
        let hok = m.header.is_none_or(|v| hv == Some(v));
        mok && hok
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn prop_router_matches_model(
        ms in prop::collection::vec(mspec_strategy(), 1..7),
        reqs in prop::collection::vec((
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c", ""]), 1..4),
            prop::sample::select(vec![None, Some("h.com"), Some("a.h.com"), Some("x.com"), Some("x.org")]),
            prop::sample::select(vec![Method::GET, Method::POST]),
            prop::sample::select(vec![None, Some("1"), Some("2")]),
        ), 1..10),
    ) {
        let specs: Vec<RouteSpec> = ms.iter().map(to_spec).collect();
        let Ok(router) = Router::build(&specs) else { return Ok(()); };
        for (segs, host, method, hv) in reqs {
            let path = format!("/{}", segs.join("/"));
            if crate::normalize::normalize_path(&path).map(|n| n.route != path).unwrap_or(true) {
                continue; // the router only sees normalized paths
            }
            let mut headers = HeaderMap::new();
            if let Some(v) = hv {
                headers.insert("x-v", HeaderValue::from_static(v));
            }
            let got = match router.find(host, &path, &method, &headers) {
                RouteMatch::Found { route, .. } => Some(route),
                _ => None,
            };
            let want = model_find(&ms, host, &path, &method, hv);
            prop_assert_eq!(got, want, "path {} host {:?} method {} hv {:?} routes {:?}", path, host, method, hv, ms);
        }
    }
}

#[test]
fn router_is_send_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Router>();
}

#[test]
fn params_literal_special_chars() {
    let r = build(&[
        params("/a*/{id}"),
        params("/:x/{id}"),
        params("/@v1,2/{id}"),
    ]);
    assert_eq!(f(&r, None, "/a*/1", Method::GET), Some(0));
    assert_eq!(f(&r, None, "/ab/1", Method::GET), None);
    assert_eq!(f(&r, None, "/:x/1", Method::GET), Some(1));
    assert_eq!(f(&r, None, "/@v1,2/1", Method::GET), Some(2));
}

#[test]
fn params_values_come_from_the_route_form() {
    let r = build(&[params("/users/{id}")]);
    let n = match crate::normalize::normalize_path("/users/42;v=1") {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    match r.find(None, &n.route, &Method::GET, &HeaderMap::new()) {
        RouteMatch::Found { params, .. } => assert_eq!(params.get("id"), Some("42")),
        other => panic!("{other:?}"),
    }
}
