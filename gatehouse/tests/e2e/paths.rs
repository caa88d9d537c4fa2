//! Route-level auth bypass through path normalisation (SECURITY-TESTS 2.4, P1–P10, P-prop).
//!
//! Here the protected area is modelled by routing alone (auth_jwt.rs re-runs the same paths
//! with `/admin/*` behind a JWT and expects 401): route `admin`
//! (`/admin/*`) goes to the echo upstream named "admin" (it would sit behind auth), route
//! `api` (`/api/*`) to the echo upstream named "api", and there is no catch-all. The pass
//! criterion for every attack path: the gateway answers 400 or 404, or routes to `admin`. It
//! never routes to `api` while the path the upstream would resolve (percent-decode once,
//! remove dot segments, merge slashes, strip `;params`, lowercase; in several plausible
//! orders) is under `/admin`.
//!
//! Requests are written as raw bytes: HTTP client libraries normalise paths themselves
//! (`url` resolves `%2e%2e` and turns `\` into `/`), which would hide what is being tested.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

use crate::common::*;

const T: Duration = Duration::from_secs(10);

struct Setup {
    admin: EchoUpstream,
    api: EchoUpstream,
    gw: TestGateway,
}

async fn setup() -> Setup {
    let admin = EchoUpstream::start("admin").await.expect("admin upstream");
    let api = EchoUpstream::start("api").await.expect("api upstream");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n\
         upstreams:\n  admin:\n    targets:\n      - url: {}\n  api:\n    targets:\n      - url: {}\n\
         routes:\n\
         \x20 - name: admin\n    match: {{ path: /admin/* }}\n    upstream: admin\n\
         \x20 - name: api\n    match: {{ path: /api/* }}\n    upstream: api\n",
        admin.url(),
        api.url()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    Setup { admin, api, gw }
}

/// What one request did.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    /// `x-upstream` of a proxied response: "admin" or "api".
    upstream: Option<String>,
    /// Path and query exactly as the upstream received it.
    forwarded: Option<String>,
}

async fn probe_with(addr: SocketAddr, target: &str, extra: &str) -> anyhow::Result<Outcome> {
    let mut c = RawConn::connect(addr).await?;
    let mut req = Vec::new();
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(target.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
    req.extend_from_slice(extra.as_bytes());
    req.extend_from_slice(b"\r\n");
    c.write(&req).await?;
    let r = c.read_response(T).await?;
    let upstream = r.header("x-upstream").map(str::to_owned);
    let forwarded = if upstream.is_some() {
        let v: serde_json::Value = serde_json::from_slice(&r.body)?;
        v["path"].as_str().map(str::to_owned)
    } else {
        None
    };
    Ok(Outcome {
        status: r.status,
        upstream,
        forwarded,
    })
}

async fn probe(addr: SocketAddr, target: &str) -> Outcome {
    probe_with(addr, target, "")
        .await
        .unwrap_or_else(|e| panic!("{target:?}: {e:#}"))
}

// ---- the upstream's own view of a path ----------------------------------------------------

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode_all(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 §5.2.4 over `/`-separated segments; with `merge`, empty segments are dropped.
fn remove_dots(s: &str, merge: bool) -> String {
    let body = s.strip_prefix('/').unwrap_or(s);
    let pieces: Vec<&str> = body.split('/').collect();
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing = false;
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        match *p {
            "." => trailing = last,
            ".." => {
                stack.pop();
                trailing = last;
            }
            "" if merge || last => trailing = last,
            other => {
                stack.push(other);
                trailing = false;
            }
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if trailing && !stack.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = false;
    for c in s.chars() {
        if c == '/' && prev {
            continue;
        }
        prev = c == '/';
        out.push(c);
    }
    out
}

fn strip_params(s: &str) -> String {
    s.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

/// How plausible upstreams resolve `path_and_query` (the query is ignored). The SECURITY-TESTS
/// model first (decode, remove dots, merge, strip params, lowercase), then other orders real
/// servers use (Tomcat strips parameters first; some merge slashes before removing dots;
/// some strip parameters before decoding). Backslashes count as slashes for the lenient ones.
fn upstream_views(path_and_query: &str) -> Vec<String> {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let d = percent_decode_all(path);
    let ds = d.replace('\\', "/");
    vec![
        strip_params(&merge_slashes(&remove_dots(&d, false))),
        merge_slashes(&remove_dots(&strip_params(&d), false)),
        remove_dots(&merge_slashes(&strip_params(&d)), true),
        remove_dots(&strip_params(&merge_slashes(&ds)), true),
        remove_dots(
            &merge_slashes(&percent_decode_all(&strip_params(path))),
            true,
        ),
    ]
    .into_iter()
    .map(|v| v.to_ascii_lowercase())
    .collect()
}

fn under_admin(view: &str) -> bool {
    view == "/admin" || view.starts_with("/admin/")
}

/// The P criterion for one request.
fn check(target: &str, out: &Outcome) -> Result<(), String> {
    match (out.status, out.upstream.as_deref()) {
        (400 | 404, None) => Ok(()),
        (200, Some("admin")) => Ok(()),
        (200, Some("api")) => {
            let fwd = out.forwarded.as_deref().unwrap_or_default();
            let views = upstream_views(fwd);
            if views.iter().any(|v| under_admin(v)) {
                Err(format!(
                    "{target:?} was routed to api, but the upstream resolves {fwd:?} under /admin: {views:?}"
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("{target:?}: unexpected outcome {out:?}")),
    }
}

fn assert_safe(target: &str, out: &Outcome) {
    if let Err(e) = check(target, out) {
        panic!("{e}");
    }
}

fn assert_admin_or_400(target: &str, out: &Outcome) {
    assert_safe(target, out);
    assert!(
        out.status == 400 || out.upstream.as_deref() == Some("admin"),
        "{target:?}: expected 400 or the admin route, got {out:?}"
    );
}

// ---- P1–P10 -----------------------------------------------------------------------------

#[tokio::test]
async fn p1_dotdot_normalised_before_routing() {
    let s = setup().await;
    let out = probe(s.gw.addr(), "/api/../admin/x").await;
    assert_admin_or_400("/api/../admin/x", &out);
    if out.status == 200 {
        assert_eq!(out.forwarded.as_deref(), Some("/admin/x"));
    }
    assert_eq!(s.api.hits(), 0);
}

#[tokio::test]
async fn p2_encoded_dots_normalised_before_routing() {
    let s = setup().await;
    for p in [
        "/api/%2e%2e/admin/x",
        "/api/%2E%2E/admin/x",
        "/api/.%2e/admin/x",
        "/api/%2e./admin/x",
        "/api/%2E./admin/x",
        "/api/x/%2e%2e/%2E%2E/admin/x",
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_admin_or_400(p, &out);
        if out.status == 200 {
            assert_eq!(out.forwarded.as_deref(), Some("/admin/x"), "{p}");
        }
    }
    assert_eq!(s.api.hits(), 0);
}

#[tokio::test]
async fn p3_double_encoding_decoded_once() {
    let s = setup().await;
    for p in ["/api/%252e%252e/admin", "/api/%252E%252E/admin/x"] {
        let out = probe(s.gw.addr(), p).await;
        assert_safe(p, &out);
        assert_eq!(out.status, 200, "{p}: {out:?}");
        assert_eq!(out.upstream.as_deref(), Some("api"), "{p}");
        // Decoded once only: the upstream receives the escapes unchanged.
        assert_eq!(out.forwarded.as_deref(), Some(p));
    }
    assert_eq!(s.admin.hits(), 0);
}

#[tokio::test]
async fn p4_encoded_slash_and_backslash_rejected() {
    let s = setup().await;
    for p in [
        "/admin%2Fx",
        "/admin%2fx",
        "/api%2F..%2Fadmin",
        "/api/%2e%2e%2fadmin",
        "/api%5C..%5Cadmin",
        "/api%5c..%5cadmin",
        "/api/..%5cadmin",
        "/api\\..\\admin",
        "/api/..\\admin",
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_eq!(out.status, 400, "{p}: {out:?}");
    }
    assert_eq!(s.api.hits() + s.admin.hits(), 0);
}

#[tokio::test]
async fn p5_slashes_merged_and_dots_removed() {
    let s = setup().await;
    for (p, fwd) in [
        ("//admin/x", "/admin/x"),
        ("/./admin", "/admin"),
        ("/.//admin/", "/admin/"),
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_admin_or_400(p, &out);
        assert_eq!(out.status, 200, "{p}: {out:?}");
        assert_eq!(out.forwarded.as_deref(), Some(fwd), "{p}");
    }
    // Merging first gives /admin, removing dots first gives /api/admin: ambiguous, so 400.
    let out = probe(s.gw.addr(), "/api//../admin").await;
    assert_admin_or_400("/api//../admin", &out);
    assert_eq!(s.api.hits(), 0);
}

#[tokio::test]
async fn p6_tomcat_path_parameters() {
    let s = setup().await;
    for p in [
        "/admin;x=1/y",
        "/admin;/y",
        "/api/..;/admin",
        "/api/..;x=1/admin/y",
        "/api/.;/../admin",
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_admin_or_400(p, &out);
    }
    // `;params` do not hide a protected prefix, and are stripped for routing only.
    let out = probe(s.gw.addr(), "/admin;x=1/y").await;
    assert_eq!(out.upstream.as_deref(), Some("admin"));
    assert_eq!(out.forwarded.as_deref(), Some("/admin;x=1/y"));
    assert_eq!(s.api.hits(), 0);
}

#[tokio::test]
async fn p7_case_variants_never_reach_the_public_route() {
    let s = setup().await;
    for p in [
        "/ADMIN/x",
        "/Admin",
        "/aDmIn/x",
        "/api/../ADMIN/x",
        "/%41dmin/x",
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_safe(p, &out);
        assert_ne!(out.upstream.as_deref(), Some("api"), "{p}");
        // The router is case-sensitive and there is no catch-all: 404.
        assert_eq!(out.status, 404, "{p}: {out:?}");
    }
    assert_eq!(s.api.hits() + s.admin.hits(), 0);
}

#[tokio::test]
async fn p8_prefixes_match_on_segment_boundaries() {
    let s = setup().await;
    for (p, expect) in [
        ("/administrator", None),
        ("/admin-x/y", None),
        ("/apix/admin", None),
        ("/admin", Some("admin")),
        ("/admin/", Some("admin")),
        ("/admin?x=1", Some("admin")),
        ("/api", Some("api")),
        ("/api/", Some("api")),
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_safe(p, &out);
        assert_eq!(out.upstream.as_deref(), expect, "{p}: {out:?}");
        if expect.is_none() {
            assert_eq!(out.status, 404, "{p}");
        }
    }
}

#[tokio::test]
async fn p9_nul_space_trailing_dot_and_fullwidth() {
    let s = setup().await;
    let out = probe(s.gw.addr(), "/admin%00").await;
    assert_eq!(out.status, 400, "{out:?}");
    for p in [
        "/admin%20",
        "/admin.",
        "/%EF%BD%81dmin",
        "/api/../%ef%bd%81dmin/x",
    ] {
        let out = probe(s.gw.addr(), p).await;
        assert_safe(p, &out);
        // Not the `admin` segment, and no Unicode folding to ASCII.
        assert_eq!(out.status, 404, "{p}: {out:?}");
    }
    // Raw full-width `ａ` (UTF-8 bytes in the request target).
    let out = probe(s.gw.addr(), "/\u{ff41}dmin").await;
    assert!(matches!(out.status, 400 | 404), "{out:?}");
    assert_eq!(out.upstream, None);
    assert_eq!(s.api.hits() + s.admin.hits(), 0);
}

#[tokio::test]
async fn p10_route_on_path_only_and_override_headers_stripped() {
    let s = setup().await;
    let out = probe(s.gw.addr(), "/api?x=/admin").await;
    assert_eq!(out.upstream.as_deref(), Some("api"));
    assert_eq!(out.forwarded.as_deref(), Some("/api?x=/admin"));

    let out = probe(s.gw.addr(), "/api/x?next=/../admin/x&p=%2e%2e%2fadmin").await;
    assert_eq!(out.upstream.as_deref(), Some("api"));
    assert_eq!(
        out.forwarded.as_deref(),
        Some("/api/x?next=/../admin/x&p=%2e%2e%2fadmin")
    );

    let out = probe_with(
        s.gw.addr(),
        "/api/x",
        "X-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nX-Original-Url: /admin\r\n",
    )
    .await
    .expect("probe");
    assert_eq!(out.upstream.as_deref(), Some("api"));
    let rec = s.api.last_request().expect("request");
    assert_eq!(rec.path, "/api/x");
    assert!(rec.header("x-original-url").is_none(), "{:?}", rec.headers);
    assert!(rec.header("x-rewrite-url").is_none(), "{:?}", rec.headers);

    // The override headers do not steer routing either way.
    let out = probe_with(s.gw.addr(), "/nothing", "X-Original-URL: /api/x\r\n")
        .await
        .expect("probe");
    assert_eq!(out.status, 404);
    assert_eq!(s.admin.hits(), 0);
}

// ---- P-prop -----------------------------------------------------------------------------

const SEGMENTS: &[&str] = &[
    "api",
    "admin",
    "admin",
    "ADMIN",
    "Admin",
    "x",
    "..",
    "..",
    ".",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%252e",
    "%252e%252e",
    ";x=1",
    ";",
    "admin;x=1",
    "..;",
    ".;x=1",
    "%3b",
    "%61dmin",
    "adm%69n",
    "",
];
const SEPARATORS: &[&str] = &[
    "/", "/", "/", "/", "//", "./", "/./", "/../", "%2f", "%2F", "%5c", "%5C", "\\",
];
const PREFIXES: &[&str] = &[
    "/api", "/api", "/api/", "/admin", "/", "//", "/./", "/api/x",
];
const SUFFIXES: &[&str] = &["", "", "/", "/admin", "/x", "?x=/admin"];

/// Random mixes of the P1–P9 mutations, with random case changes.
fn attack_path() -> impl Strategy<Value = String> {
    let part = (
        proptest::sample::select(SEPARATORS),
        proptest::collection::vec(proptest::sample::select(SEGMENTS), 1..3),
    );
    (
        proptest::sample::select(PREFIXES),
        proptest::collection::vec(part, 0..6),
        proptest::sample::select(SUFFIXES),
        prop_oneof![2 => Just(None), 1 => proptest::collection::vec(proptest::bool::weighted(0.2), 64).prop_map(Some)],
    )
        .prop_map(|(prefix, parts, suffix, case_mask)| {
            let mut s = prefix.to_string();
            for (sep, segs) in parts {
                s.push_str(sep);
                s.push_str(&segs.concat());
            }
            s.push_str(suffix);
            if let Some(mask) = case_mask {
                s = s
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if mask[i % mask.len()] {
                            if c.is_ascii_lowercase() {
                                c.to_ascii_uppercase()
                            } else {
                                c.to_ascii_lowercase()
                            }
                        } else {
                            c
                        }
                    })
                    .collect();
            }
            if !s.starts_with('/') {
                s.insert(0, '/');
            }
            s
        })
}

/// P-prop end to end: a real gateway in front of the two upstreams, ≥ 1000 random attack
/// paths, 0 counter-examples allowed. The gateway runs on its own multi-thread runtime; each
/// case blocks on one raw request from the test thread.
#[test]
fn p_prop_upstream_admin_view_never_routed_to_api() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(setup());
    let addr = s.gw.addr();
    let proxied = AtomicUsize::new(0);
    let to_admin = AtomicUsize::new(0);
    let to_api = AtomicUsize::new(0);
    let cases = 5000;
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&attack_path(), |target| {
        let out = rt
            .block_on(probe_with(addr, &target, ""))
            .map_err(|e| TestCaseError::fail(format!("{target:?}: {e:#}")))?;
        check(&target, &out).map_err(TestCaseError::fail)?;
        if out.upstream.is_some() {
            proxied.fetch_add(1, Ordering::Relaxed);
        }
        match out.upstream.as_deref() {
            Some("admin") => to_admin.fetch_add(1, Ordering::Relaxed),
            Some("api") => to_api.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        Ok(())
    });
    if let Err(e) = result {
        panic!("P-prop counter-example: {e}");
    }
    // Every request the gateway answered itself (400/404) reached no upstream.
    let hits = s.admin.hits() + s.api.hits();
    assert_eq!(hits, proxied.load(Ordering::Relaxed));
    // The generator really exercises both routes (a vacuous run would prove nothing).
    let (admin, api) = (
        to_admin.load(Ordering::Relaxed),
        to_api.load(Ordering::Relaxed),
    );
    assert!(admin >= 50 && api >= 50, "admin {admin}, api {api}");
    drop(s);
    rt.shutdown_timeout(Duration::from_secs(5));
}

#[test]
fn upstream_view_model_sanity() {
    // The criterion can fail: an api-routed request the upstream resolves under /admin.
    let bad = Outcome {
        status: 200,
        upstream: Some("api".into()),
        forwarded: Some("/api/%2e%2e/admin/x".into()),
    };
    assert!(check("/api/%2e%2e/admin/x", &bad).is_err());
    let ok = Outcome {
        forwarded: Some("/api/%252e%252e/admin".into()),
        ..bad.clone()
    };
    assert!(check("/api/%252e%252e/admin", &ok).is_ok());
    assert_eq!(upstream_views("/API/%2e%2e/Admin;x/y")[0], "/admin/y");
    assert_eq!(
        upstream_views("/api/%252e%252e/admin")[0],
        "/api/%2e%2e/admin"
    );
    assert_eq!(upstream_views("//a//b?x=/admin")[0], "/a/b");
    assert!(upstream_views("/api/..;/admin")
        .iter()
        .any(|v| under_admin(v)));
    assert!(upstream_views("/api/x/..%2f..%2fadmin")
        .iter()
        .any(|v| under_admin(v)));
}
