//! Header trust at the edge (SECURITY-TESTS 2.5 X1, X3, X4) and the headers the gateway adds
//! for upstreams and clients: `x-forwarded-*`, `x-real-ip`, `x-request-id`, `traceparent`.

use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(10);

/// One catch-all route to an echo upstream; `trusted` adds `trusted_proxies: [127.0.0.1/32]`
/// so the loopback test client counts as a trusted proxy.
async fn setup(trusted: bool) -> (EchoUpstream, TestGateway) {
    let up = EchoUpstream::start("app").await.expect("echo upstream");
    let mut yaml = simple_config(&up.url());
    if trusted {
        yaml.push_str("trusted_proxies: [127.0.0.1/32]\n");
    }
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    (up, gw)
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex of exactly `len` characters, not all zeros.
fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (W3C trace context, version 00).
fn parse_traceparent(tp: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = tp.split('-').collect();
    match parts.as_slice() {
        ["00", trace, span, flags]
            if is_hex_id(trace, 32) && is_hex_id(span, 16) && flags.len() == 2 =>
        {
            Some((trace.to_string(), span.to_string(), flags.to_string()))
        }
        _ => None,
    }
}

/// The access-log line for `request_id` (written when the response body completes).
async fn log_line(gw: &TestGateway, request_id: &str) -> serde_json::Value {
    let mut found = None;
    let ok = wait_for(T, || {
        found = gw
            .access_logs()
            .into_iter()
            .find(|l| l["request_id"] == request_id);
        found.is_some()
    })
    .await;
    assert!(ok, "no access log line for {request_id}");
    found.expect("found")
}

// ---- X1 ----------------------------------------------------------------------------------

fn x1_request(addr: std::net::SocketAddr) -> Vec<u8> {
    format!(
        "GET /x1 HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: close, X-Forwarded-For, X-Real-IP, X-Request-Id, X-Auth-User, X-Nominated\r\n\
         X-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nX-Request-Id: evil-request-id\r\n\
         X-Auth-User: admin\r\nX-Nominated: secret\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade: foo/1\r\nX-Custom: kept\r\n\r\n"
    )
    .into_bytes()
}

fn assert_x1_upstream_view(up: &EchoUpstream, resp: &RawResponse) {
    let rec = up.last_request().expect("upstream saw the request");
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "x-auth-user",
        "x-nominated",
    ] {
        assert!(
            rec.header(gone).is_none(),
            "{gone} reached the upstream: {:?}",
            rec.headers
        );
    }
    assert_eq!(rec.header("x-custom"), Some("kept"));
    // The gateway's own values, not the client's, and exactly one of each.
    assert_eq!(rec.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(rec.header_all("x-real-ip"), vec!["127.0.0.1"]);
    let ids = rec.header_all("x-request-id");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0], "evil-request-id");
    assert!(is_generated_id(ids[0]), "{}", ids[0]);
    assert_eq!(resp.header("x-request-id"), Some(ids[0]));
}

#[tokio::test]
async fn x1_connection_nominated_headers_stripped_before_gateway_adds_its_own() {
    let (up, gw) = setup(false).await;
    let resp = raw_roundtrip(gw.addr(), &x1_request(gw.addr()))
        .await
        .expect("response");
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_x1_upstream_view(&up, &resp);
}

/// Traefik CVE-2024-45410 shape with a *trusted* peer: a client header nominated in
/// `Connection` is hop-by-hop, so it is neither forwarded nor believed (client IP, request id).
#[tokio::test]
async fn x1_nominated_headers_from_trusted_peer_are_not_believed() {
    let (up, gw) = setup(true).await;
    let resp = raw_roundtrip(gw.addr(), &x1_request(gw.addr()))
        .await
        .expect("response");
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_x1_upstream_view(&up, &resp);
    let id = resp.header("x-request-id").expect("x-request-id");
    assert_eq!(log_line(&gw, id).await["client_ip"], "127.0.0.1");
}

/// The gateway's own response fields (written beside the header map by the HTTP/1 encoder,
/// merged into it for HTTP/2) replace an upstream's and a route's copies: one `x-request-id`,
/// the gateway's, on both protocols; the body's length is the framing on both.
#[tokio::test]
async fn gateway_response_fields_replace_upstream_and_route_copies_on_h1_and_h2() {
    let up = RawUpstream::start(RawScript::Respond(http_response(
        200,
        &[("X-Request-Id", "upstream-id"), ("X-Up", "1")],
        b"hello",
    )))
    .await
    .expect("raw upstream");
    let routes = "  - name: all\n    match: { path: /* }\n    upstream: app\n    headers:\n      response: { set: { x-request-id: route-id, x-route: r } }\n";
    let gw = TestGateway::start(&config_with_routes(&up.url(), routes))
        .await
        .expect("gateway");

    // HTTP/1.1, two requests on one connection.
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let req = format!("GET /a HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr());
        c.write(req.as_bytes()).await.expect("write");
        let resp = c.read_response(T).await.expect("response");
        assert_eq!(resp.status, 200);
        let ids = resp.header_all("x-request-id");
        assert_eq!(ids.len(), 1, "{:?}", resp.head);
        assert!(is_generated_id(ids[0]), "{:?}", resp.head);
        seen.push(ids[0].to_string());
        assert_eq!(resp.header("x-route"), Some("r"));
        assert_eq!(resp.header("x-up"), Some("1"));
        assert_eq!(resp.header_all("content-length"), vec!["5"]);
        assert!(resp.header("transfer-encoding").is_none());
        assert!(resp.header("connection").is_none(), "{:?}", resp.head);
        assert_eq!(resp.body_str(), "hello");
    }
    assert_ne!(seen[0], seen[1]);

    // HTTP/2 (prior knowledge).
    let r = h2c_client().get(gw.url("/a")).send().await.expect("h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let ids: Vec<_> = r.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "{:?}", r.headers());
    assert!(is_generated_id(ids[0].to_str().expect("ascii")));
    assert_eq!(r.headers()["x-route"], "r");
    assert_eq!(r.headers()["content-length"], "5");
    assert_eq!(r.text().await.expect("body"), "hello");
}

#[tokio::test]
async fn x1_hop_by_hop_response_headers_stripped() {
    let (_up, _gw, resp) = raw_upstream_get(http_response(
        200,
        &[
            ("Connection", "X-Secret, keep-alive"),
            ("X-Secret", "internal"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Visible", "yes"),
        ],
        b"ok",
    ))
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "ok");
    assert_eq!(resp.header("x-visible"), Some("yes"));
    for gone in ["x-secret", "keep-alive", "proxy-connection"] {
        assert!(resp.header(gone).is_none(), "{gone}: {:?}", resp.head);
    }
    // Whatever `Connection` the client sees is the gateway's own, never the upstream's list.
    assert!(resp
        .header_all("connection")
        .iter()
        .all(|v| !v.to_ascii_lowercase().contains("x-secret")));
}

/// A gateway in front of a raw upstream that answers every request with `response`, and the
/// response to one raw HTTP/1.1 `GET /` through it.
async fn raw_upstream_get(response: Vec<u8>) -> (RawUpstream, TestGateway, RawResponse) {
    let up = RawUpstream::start(RawScript::Respond(response))
        .await
        .expect("raw upstream");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let req = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr());
    let resp = raw_roundtrip(gw.addr(), req.as_bytes())
        .await
        .expect("resp");
    (up, gw, resp)
}

/// An HTTP/1 upstream's fields reach the client as the upstream sent them (names in their
/// case, repeated fields in order, its own `Date`), over HTTP/1 (where the usual response is
/// passed on without a header map, `http1::raw`) and over HTTP/2 (which needs the map); and
/// an upstream field the gateway replaces or removes still is replaced or removed.
#[tokio::test]
async fn upstream_response_fields_pass_through_as_sent() {
    let date = "Tue, 01 Dec 2026 10:00:00 GMT";
    let passed = [
        ("Server", "Up/1.0"),
        ("Date", date),
        ("Set-Cookie", "a=1"),
        ("X-Mixed-Case", "Value  with  spaces"),
        ("Set-Cookie", "b=2"),
        ("cache-control", "no-store"),
    ];
    let (_up, gw, resp) = raw_upstream_get(http_response(200, &passed, b"ok")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "ok");
    let upstream_fields: Vec<(&str, &str)> = resp
        .head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(|(n, _)| passed.iter().any(|(p, _)| p.eq_ignore_ascii_case(n)))
        .collect();
    assert_eq!(upstream_fields, passed, "{:?}", resp.head);
    assert_eq!(resp.header_all("date"), vec![date]);
    assert_eq!(resp.header_all("content-length"), vec!["2"]);
    assert_eq!(resp.header_all("x-request-id").len(), 1, "{:?}", resp.head);

    let r = h2c_client().get(gw.url("/")).send().await.expect("h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(r.headers()["server"], "Up/1.0");
    assert_eq!(r.headers()["x-mixed-case"], "Value  with  spaces");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers().get_all("date").iter().count(), 1);
    assert_eq!(r.headers()["date"], date);
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.text().await.expect("body"), "ok");

    // An upstream `x-request-id` is replaced by the gateway's; `TE` is hop-by-hop.
    let (_up, _gw, resp) = raw_upstream_get(http_response(
        200,
        &[
            ("X-Request-Id", "upstream's"),
            ("TE", "trailers"),
            ("X-Kept", "1"),
        ],
        b"ok",
    ))
    .await;
    let ids = resp.header_all("x-request-id");
    assert_eq!(ids.len(), 1, "{:?}", resp.head);
    assert!(is_generated_id(ids[0]), "{:?}", resp.head);
    assert!(resp.header("te").is_none(), "{:?}", resp.head);
    assert_eq!(resp.header("x-kept"), Some("1"));
}

// ---- X3 ----------------------------------------------------------------------------------

#[tokio::test]
async fn x3_untrusted_client_forwarding_claims_are_replaced() {
    let (up, gw) = setup(false).await;
    let req = "GET /who HTTP/1.1\r\nHost: public.example:8080\r\nX-Forwarded-For: 1.2.3.4\r\n\
         X-Real-IP: 5.6.7.8\r\nTrue-Client-IP: 9.9.9.9\r\nX-Client-IP: 9.9.9.8\r\n\
         Forwarded: for=1.2.3.4;proto=https\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\n\r\n";
    let resp = raw_roundtrip(gw.addr(), req.as_bytes())
        .await
        .expect("resp");
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let rec = up.last_request().expect("request");
    assert_eq!(rec.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(rec.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(rec.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        rec.header_all("x-forwarded-host"),
        vec!["public.example:8080"]
    );
    for gone in ["true-client-ip", "x-client-ip", "forwarded"] {
        assert!(rec.header(gone).is_none(), "{gone}: {:?}", rec.headers);
    }
    let id = resp.header("x-request-id").expect("id");
    assert_eq!(log_line(&gw, id).await["client_ip"], "127.0.0.1");

    // 100 requests with random X-Forwarded-For values: the logged client IP (what rate limits
    // and IP rules key on) is always the TCP peer.
    let client = client();
    let mut ids = Vec::new();
    for i in 0..100u32 {
        let spoof = format!(
            "{}.{}.{}.{}",
            fastrand_u8(i, 1),
            fastrand_u8(i, 2),
            fastrand_u8(i, 3),
            fastrand_u8(i, 4)
        );
        let r = client
            .get(gw.url("/spoof"))
            .header("x-forwarded-for", format!("{spoof}, 10.0.0.{}", i % 250))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        ids.push(
            r.headers()["x-request-id"]
                .to_str()
                .expect("ascii")
                .to_string(),
        );
        r.bytes().await.expect("body");
    }
    assert!(
        wait_for(T, || gw.access_logs().len() >= 101).await,
        "access log lines missing"
    );
    let logs = gw.access_logs();
    for id in &ids {
        let line = logs
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .expect("line");
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    }
}

/// Deterministic pseudo-random octet (no extra dependency, reproducible failures).
fn fastrand_u8(i: u32, k: u32) -> u8 {
    (i.wrapping_mul(2_654_435_761)
        .wrapping_add(k.wrapping_mul(40_503))
        >> 11) as u8
}

#[tokio::test]
async fn x3_trusted_chain_uses_rightmost_untrusted_and_appends_peer() {
    let (up, gw) = setup(true).await;
    let req = format!(
        "GET /who HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 10.9.9.9, 203.0.113.7, 127.0.0.1\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example.com\r\n\r\n",
        gw.addr()
    );
    let resp = raw_roundtrip(gw.addr(), req.as_bytes())
        .await
        .expect("resp");
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let rec = up.last_request().expect("request");
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        vec!["10.9.9.9, 203.0.113.7, 127.0.0.1, 127.0.0.1"]
    );
    assert_eq!(rec.header_all("x-real-ip"), vec!["203.0.113.7"]);
    // A trusted proxy's view of scheme and host is kept.
    assert_eq!(rec.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(rec.header_all("x-forwarded-host"), vec!["api.example.com"]);
    let id = resp.header("x-request-id").expect("id");
    assert_eq!(log_line(&gw, id).await["client_ip"], "203.0.113.7");

    // Garbage in the chain ends the walk: nothing left of it is believed.
    let req = format!(
        "GET /who HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 203.0.113.9, not-an-ip, 127.0.0.1\r\n\r\n",
        gw.addr()
    );
    let resp = raw_roundtrip(gw.addr(), req.as_bytes())
        .await
        .expect("resp");
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").expect("id");
    assert_eq!(log_line(&gw, id).await["client_ip"], "127.0.0.1");
    let rec = up.last_request().expect("request");
    assert_eq!(rec.header_all("x-real-ip"), vec!["127.0.0.1"]);
}

// ---- X4 ----------------------------------------------------------------------------------

#[tokio::test]
async fn x4_encoded_crlf_in_path_never_becomes_a_header() {
    let up = EchoUpstream::start("app").await.expect("echo");
    let routes = "  - name: users\n    match: { path: /users/{id} }\n    upstream: app\n    rewrite: { path: /v2/users/{id} }\n";
    let gw = TestGateway::start(&config_with_routes(&up.url(), routes))
        .await
        .expect("gateway");
    for path in [
        "/users/%0d%0aSet-Cookie:x",
        "/users/a%0AX-Admin:%201",
        "/users/a%0DX-Admin:%201",
        "/users/a%00b",
    ] {
        let mut c = RawConn::connect(gw.addr()).await.expect("connect");
        c.write(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let raw = c.read_until_timeout(Duration::from_secs(2)).await;
        let resp = parse_responses(&raw, false);
        assert_eq!(resp.first().map(|r| r.status), Some(400), "{path}");
        assert!(
            !String::from_utf8_lossy(&raw)
                .to_ascii_lowercase()
                .contains("\r\nset-cookie"),
            "{path}: {raw:?}"
        );
        assert!(!String::from_utf8_lossy(&raw).contains("\r\nX-Admin"));
    }
    assert_eq!(up.hits(), 0);

    // In the query the escapes travel as they are: encoded, never decoded into the head.
    let resp = raw_roundtrip(
        gw.addr(),
        b"GET /users/7?next=%0d%0aSet-Cookie:%20x HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await
    .expect("resp");
    assert_eq!(resp.status, 200);
    assert!(resp.header("set-cookie").is_none());
    let rec = up.last_request().expect("request");
    assert_eq!(rec.path, "/v2/users/7?next=%0d%0aSet-Cookie:%20x");
    assert!(rec.header("set-cookie").is_none());
}

#[tokio::test]
async fn x4_raw_cr_or_nul_in_request_header_rejected() {
    let (up, gw) = setup(false).await;
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: a\rX-Admin: 1\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\n\r\n"[..],
    ] {
        let mut c = RawConn::connect(gw.addr()).await.expect("connect");
        c.write(bad).await.expect("write");
        let r = c.read_response(T).await.expect("response");
        assert_eq!(r.status, 400, "{bad:?}");
        assert!(
            c.is_closed(T).await,
            "connection must close after a framing error"
        );
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn x4_crlf_in_configured_header_value_rejected_at_load() {
    let up = EchoUpstream::start("app").await.expect("echo");
    for (side, value) in [
        ("request", "\"a\\r\\nX-Admin: 1\""),
        ("response", "\"a\\nSet-Cookie: x=1\""),
        ("request", "\"a\\u0000b\""),
    ] {
        let routes = format!(
            "  - name: all\n    match: {{ path: /* }}\n    upstream: app\n    headers:\n      {side}:\n        set: {{ x-user: {value} }}\n"
        );
        let err = match TestGateway::start(&config_with_routes(&up.url(), &routes)).await {
            Ok(_) => panic!("a header value with CR/LF/NUL must not load ({side} {value})"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("header"),
            "error should point at the header: {err}"
        );
    }
}

// ---- forwarded headers, request ids, traceparent -----------------------------------------

#[tokio::test]
async fn forwarded_headers_added_for_upstream() {
    let (up, gw) = setup(false).await;
    let resp = client().get(gw.url("/fwd?q=1")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    let host = gw.addr().to_string();
    assert_eq!(echo_headers_all(&v, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo_headers_all(&v, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(echo_headers_all(&v, "x-forwarded-host"), vec![host.clone()]);
    assert_eq!(echo_headers_all(&v, "host"), vec![host]);
    assert_eq!(echo_headers_all(&v, "x-real-ip"), vec!["127.0.0.1"]);
    let tp = echo_header(&v, "traceparent").expect("traceparent");
    assert!(parse_traceparent(tp).is_some(), "{tp}");
    assert!(is_generated_id(
        echo_header(&v, "x-request-id").expect("id")
    ));
    assert_eq!(v["path"], "/fwd?q=1");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn request_id_generated_when_absent_and_echoed_on_response() {
    let (up, gw) = setup(false).await;
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = c.get(gw.url("/id")).send().await.expect("send");
        let id = resp.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(is_generated_id(&id), "{id}");
        let v = echo_json(resp).await;
        assert_eq!(echo_headers_all(&v, "x-request-id"), vec![id.clone()]);
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1]);
    assert_eq!(up.hits(), 2);
    // The access log line carries the same id.
    assert_eq!(log_line(&gw, &seen[0]).await["path"], "/id");
}

#[tokio::test]
async fn request_id_from_untrusted_client_is_replaced() {
    let (_up, gw) = setup(false).await;
    let resp = client()
        .get(gw.url("/id"))
        .header("x-request-id", "client-chosen-id")
        .send()
        .await
        .expect("send");
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(id, "client-chosen-id");
    assert!(is_generated_id(&id));
    let v = echo_json(resp).await;
    assert_eq!(echo_headers_all(&v, "x-request-id"), vec![id]);
}

#[tokio::test]
async fn request_id_from_trusted_proxy_is_kept_when_valid() {
    let (_up, gw) = setup(true).await;
    let c = client();
    let resp = c
        .get(gw.url("/id"))
        .header("x-request-id", "edge-1234.abc_DEF")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["x-request-id"], "edge-1234.abc_DEF");
    let v = echo_json(resp).await;
    assert_eq!(
        echo_headers_all(&v, "x-request-id"),
        vec!["edge-1234.abc_DEF"]
    );

    // Invalid ids (bad characters, too long) are replaced even from a trusted proxy.
    for bad in [
        "has space".to_string(),
        "x".repeat(200),
        "a;b=c".to_string(),
    ] {
        let resp = c
            .get(gw.url("/id"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .expect("send");
        let id = resp.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(is_generated_id(&id), "{bad:?} -> {id}");
        let v = echo_json(resp).await;
        assert_eq!(echo_headers_all(&v, "x-request-id"), vec![id]);
    }
}

#[tokio::test]
async fn request_id_on_gateway_generated_errors() {
    let up = EchoUpstream::start("app").await.expect("echo");
    let routes = "  - name: only\n    match: { path: /only/* }\n    upstream: app\n";
    let gw = TestGateway::start(&config_with_routes(&up.url(), routes))
        .await
        .expect("gateway");
    let resp = client().get(gw.url("/nope")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(is_generated_id(&id), "{id}");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "no_route");
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn traceparent_continued_or_started() {
    let (_up, gw) = setup(false).await;
    let c = client();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let v = echo_json(
        c.get(gw.url("/t"))
            .header("traceparent", incoming)
            .send()
            .await
            .expect("send"),
    )
    .await;
    let tps = echo_headers_all(&v, "traceparent");
    assert_eq!(tps.len(), 1, "{tps:?}");
    let (trace, span, flags) = parse_traceparent(&tps[0]).expect("valid traceparent");
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        span, "00f067aa0ba902b7",
        "the gateway hop gets its own span id"
    );
    assert_eq!(flags, "01");

    // Invalid (all-zero trace id, wrong version, uppercase, garbage) or absent: a new trace.
    for bad in [
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("garbage"),
        None,
    ] {
        let mut req = c.get(gw.url("/t"));
        if let Some(b) = bad {
            req = req.header("traceparent", b);
        }
        let v = echo_json(req.send().await.expect("send")).await;
        let tps = echo_headers_all(&v, "traceparent");
        assert_eq!(tps.len(), 1, "{tps:?}");
        let (trace, _, _) =
            parse_traceparent(&tps[0]).unwrap_or_else(|| panic!("{bad:?} -> invalid {}", tps[0]));
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
    }
}

/// A route's request header operations run after the gateway's forwarding fields are set:
/// they can replace or remove them, and the upstream sees each field once.
#[tokio::test]
async fn route_header_operations_apply_to_the_forwarding_fields() {
    let up = EchoUpstream::start("app").await.expect("echo upstream");
    let yaml = config_with_routes(
        &up.url(),
        "  - name: all\n    match: { path: /* }\n    upstream: app\n    headers:\n      request: { set: { x-forwarded-proto: https }, remove: [x-real-ip] }\n",
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let req = "GET /ops HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-Proto: gopher\r\n\
               X-Forwarded-For: 1.2.3.4\r\n\r\n";
    let resp = raw_roundtrip(gw.addr(), req.as_bytes())
        .await
        .expect("resp");
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let rec = up.last_request().expect("request");
    assert_eq!(rec.header_all("x-forwarded-proto"), vec!["https"]);
    assert!(rec.header("x-real-ip").is_none(), "{:?}", rec.headers);
    assert_eq!(rec.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(rec.header_all("x-forwarded-host"), vec!["a.example"]);
    let ids = rec.header_all("x-request-id");
    assert!(ids.len() == 1 && is_generated_id(ids[0]), "{ids:?}");
    assert_eq!(rec.header_all("traceparent").len(), 1);
}
