#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::collections::HashMap;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Loaded, ConfigErrors> {
    load_str(text, &no_env)
}

fn load_ok(text: &str) -> Config {
    match load(text) {
        Ok(l) => l.config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn load_err(text: &str) -> Vec<ConfigError> {
    match load(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load_str(text, &|name| vars.get(name).cloned())
}

/// The error at `path`, with a useful failure message listing what was found instead.
fn find<'a>(errors: &'a [ConfigError], path: &str) -> &'a ConfigError {
    errors.iter().find(|e| e.path == path).unwrap_or_else(|| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("no error at `{path}`; got:\n{}", all.join("\n"))
    })
}

fn line(e: &ConfigError) -> usize {
    e.location.expect("error has a location").line
}

const MINIMAL: &str = "\
listeners:
  - name: public
    addr: 0.0.0.0:8080
upstreams:
  users:
    targets:
      - url: http://10.0.0.11:9000
routes:
  - name: users
    match: { path: /api/* }
    upstream: users
";

/// The SPEC.md example restricted to the foundation subset.
const FOUNDATION: &str = r#"
listeners:
  - name: public
    addr: 0.0.0.0:8080            # HTTP/1.1 and h2c on one port
  - name: tls
    addr: 0.0.0.0:8443
    tls:                          # HTTP/1.1 + HTTP/2 by ALPN
      certificates:
        - { cert: certs/api.pem, key: certs/api.key }   # picked by SNI

admin:
  addr: 127.0.0.1:9901
  token: ${GATEHOUSE_ADMIN_TOKEN:-}   # required when addr is not loopback

limits:                           # defaults shown; all finite
  max_request_line: 8KiB          # -> 414
  max_header_bytes: 64KiB         # -> 431
  max_headers: 100                # -> 431
  max_body: 10MiB                 # per route override; -> 413
  header_timeout: 10s             # slowloris -> 408 / close
  idle_timeout: 60s
  max_connections: 10000
  http2_max_streams: 100

trusted_proxies: [10.0.0.0/8]     # X-Forwarded-For is believed only from these peers

upstreams:
  users:
    targets:
      - { url: http://10.0.0.11:9000, weight: 3 }
      - { url: http://10.0.0.12:9000, weight: 1 }
    balance: round_robin          # round_robin | least_request | random
    timeouts: { connect: 2s, request: 15s, idle: 60s }
  users_v2:
    targets:
      - { url: "https://users-v2.internal:8443" }
    balance: least_request
    http2: true

routes:
  - name: users
    match:
      hosts: [api.example.com, "*.example.com"]
      path: /api/users/{id}       # exact | /prefix/* | {param} segments | "~ ^/regex$"
      methods: [GET, PUT]
      headers: { x-api-version: "2" }
    upstream: users               # or backends: [...]
    rewrite: { strip_prefix: /api, path: /v2/users/{id} }
    headers:
      request: { set: { x-gateway: gatehouse }, remove: [cookie] }
      response: { set: { cache-control: "public, max-age=30" }, remove: [server] }
    timeout: 5s
    max_body: 1MiB
    websocket: false

  - name: users_canary
    match: { path: "~ ^/canary/(?P<rest>.*)$", methods: [get] }
    backends: [{upstream: users, weight: 90}, {upstream: users_v2, weight: 10}]
    rewrite: { path: "/{rest}" }

  - name: ws
    match: { path: /ws }
    upstream: users
    websocket: true
"#;

#[test]
fn foundation_example_parses() {
    let config = load_ok(FOUNDATION);
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.listeners[0].addr, "0.0.0.0:8080".parse().unwrap());
    let tls = config.listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates[0].cert,
        std::path::PathBuf::from("certs/api.pem")
    );
    assert_eq!(
        tls.certificates[0].key,
        std::path::PathBuf::from("certs/api.key")
    );
    assert_eq!(config.admin.addr, Admin::DEFAULT_ADDR);
    assert_eq!(
        config.admin.token, None,
        "empty token is normalized to none"
    );
    assert_eq!(config.limits, Limits::default());
    assert_eq!(
        config.trusted_proxies,
        vec!["10.0.0.0/8".parse::<Cidr>().unwrap()]
    );

    let users = &config.upstreams["users"];
    assert_eq!(users.targets[0].weight, 3);
    assert_eq!(users.balance, Balance::RoundRobin);
    assert!(!users.http2);
    assert_eq!(users.timeouts, UpstreamTimeouts::default());
    let v2 = &config.upstreams["users_v2"];
    assert_eq!(v2.targets[0].weight, 1);
    assert_eq!(v2.balance, Balance::LeastRequest);
    assert!(v2.http2);

    let r = &config.routes[0];
    assert_eq!(r.r#match.hosts, ["api.example.com", "*.example.com"]);
    assert_eq!(r.r#match.methods, ["GET", "PUT"]);
    assert_eq!(r.r#match.headers["x-api-version"], "2");
    assert_eq!(r.upstream.as_deref(), Some("users"));
    let rw = r.rewrite.as_ref().unwrap();
    assert_eq!(rw.strip_prefix.as_deref(), Some("/api"));
    assert_eq!(rw.path.as_deref(), Some("/v2/users/{id}"));
    assert_eq!(r.headers.request.set["x-gateway"], "gatehouse");
    assert_eq!(r.headers.request.remove, ["cookie"]);
    assert_eq!(
        r.headers.response.set["cache-control"],
        "public, max-age=30"
    );
    assert_eq!(r.timeout, Some(Duration::from_secs(5)));
    assert_eq!(r.max_body, Some(Size(1024 * 1024)));
    assert!(!r.websocket);
    assert_eq!(
        r.r#match.pattern().unwrap(),
        PathPattern::Params {
            pattern: "/api/users/{id}".into(),
            params: vec!["id".into()],
            prefix: false
        }
    );

    let canary = &config.routes[1];
    assert_eq!(canary.r#match.methods, ["GET"], "methods are upper-cased");
    let backends = canary.backends.as_ref().unwrap();
    assert_eq!(
        (backends[1].upstream.as_str(), backends[1].weight),
        ("users_v2", 10)
    );
    assert!(config.routes[2].websocket);
}

#[test]
fn defaults_apply() {
    let config = load_ok(MINIMAL);
    assert_eq!(config.admin.addr.to_string(), "127.0.0.1:9901");
    let l = &config.limits;
    assert_eq!(l.max_request_line, Size(8 * 1024));
    assert_eq!(l.max_header_bytes, Size(64 * 1024));
    assert_eq!(l.max_headers, 100);
    assert_eq!(l.max_body, Size(10 * 1024 * 1024));
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.http2_max_streams, 100);
    assert_eq!(l.drain_timeout, Duration::from_secs(30));
    let u = &config.upstreams["users"];
    assert_eq!(u.timeouts.connect, Duration::from_secs(2));
    assert_eq!(u.timeouts.request, Duration::from_secs(15));
    assert_eq!(u.timeouts.idle, Duration::from_secs(60));
    assert_eq!(u.targets[0].weight, 1);
    assert!(config.trusted_proxies.is_empty());
}

#[test]
fn unknown_field_at_depth_has_path_and_line() {
    let text = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    rewrite:\n      strip_prefx: /api\n",
    );
    let errors = load_err(&text);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.path, "routes[0].rewrite.strip_prefx");
    assert_eq!(
        e.location,
        Some(Location {
            line: 13,
            column: 7
        })
    );
    assert!(
        e.message.contains("unknown field `strip_prefx`"),
        "{}",
        e.message
    );
    assert!(e
        .to_string()
        .starts_with("routes[0].rewrite.strip_prefx (line 13, column 7): unknown field"));
}

#[test]
fn unknown_top_level_section() {
    let text = format!("{MINIMAL}plugins:\n  - name: acme\n");
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "plugins");
    assert_eq!(line(e), 12);
}

#[test]
fn unknown_field_in_flow_mapping() {
    let text = MINIMAL.replace("{ path: /api/* }", "{ path: /api/*, verb: GET }");
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "routes[0].match.verb");
    assert_eq!(
        e.location,
        Some(Location {
            line: 10,
            column: 28
        })
    );
}

#[test]
fn bad_duration_has_path_and_line() {
    let text = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    timeout: 5 seconds\n",
    );
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "routes[0].timeout");
    assert_eq!(
        e.location,
        Some(Location {
            line: 12,
            column: 14
        })
    );
    assert!(e.message.contains("unknown duration unit"), "{}", e.message);

    let text = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    timeout: 5\n",
    );
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "routes[0].timeout");
    assert!(e.message.contains("needs a unit"), "{}", e.message);
}

#[test]
fn bad_size_and_type_errors_have_paths() {
    let e = &load_err(&format!("{MINIMAL}limits:\n  max_body: 10MB\n"))[0];
    assert_eq!(e.path, "limits.max_body");
    assert_eq!(line(e), 13);
    assert!(
        e.message.contains("unknown size unit `MB`"),
        "{}",
        e.message
    );

    let e = &load_err(&format!("{MINIMAL}limits:\n  max_headers: lots\n"))[0];
    assert_eq!(e.path, "limits.max_headers");
    assert_eq!(line(e), 13);

    let e = &load_err(&MINIMAL.replace("http://10.0.0.11:9000", "{ nested: map }"))[0];
    assert_eq!(e.path, "upstreams.users.targets[0].url");
    assert_eq!(line(e), 7);

    let e = &load_err(&format!("{MINIMAL}limits:\n  max_connections: -1\n"))[0];
    assert_eq!(e.path, "limits.max_connections");
}

#[test]
fn missing_required_field_points_at_the_mapping() {
    let text = MINIMAL.replace("{ path: /api/* }", "{ methods: [GET] }");
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "routes[0].match");
    assert_eq!(line(e), 10);
    assert!(e.message.contains("missing field `path`"), "{}", e.message);
}

#[test]
fn bad_enum_value() {
    let text = MINIMAL.replace("    targets:\n", "    balance: fastest\n    targets:\n");
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "upstreams.users.balance");
    assert_eq!(line(e), 6);
    assert!(e.message.contains("fastest"), "{}", e.message);
}

#[test]
fn missing_upstream_is_reported_with_line() {
    let text = MINIMAL.replace("    upstream: users\n", "    upstream: nope\n");
    let errors = load_err(&text);
    let e = find(&errors, "routes[0].upstream");
    assert_eq!(
        e.location,
        Some(Location {
            line: 11,
            column: 15
        })
    );
    assert_eq!(
        e.to_string(),
        "routes[0].upstream (line 11, column 15): upstream `nope` is not defined (defined: users)"
    );
}

#[test]
fn all_semantic_errors_are_collected() {
    let text = "\
listeners:
  - name: a
    addr: 0.0.0.0:8080
  - name: a
    addr: 0.0.0.0:8081
upstreams:
  users:
    targets:
      - { url: http://x:1/path, weight: 0 }
routes:
  - name: one
    match: { path: /a/../b }
    upstream: missing
  - name: one
    match: { path: \"~ a{1000}{1000}\", hosts: [\"API.example.com:80\"] }
    backends: [{ upstream: ghost, weight: 5000 }]
  - name: bad name!
    match: { path: /x, methods: [\"G T\"] }
    upstream: users
    upstream_missing_both: 1
";
    // The last route has an unknown field: that is a deserialization error and stops first.
    let e = load_err(text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "routes[2].upstream_missing_both");
    assert_eq!(line(&e[0]), 20);

    let text = text.replace("    upstream_missing_both: 1\n", "");
    let errors = load_err(&text);
    for (path, l) in [
        ("listeners[1].name", 4),
        ("upstreams.users.targets[0].url", 9),
        ("upstreams.users.targets[0].weight", 9),
        ("routes[0].match.path", 12),
        ("routes[0].upstream", 13),
        ("routes[1].name", 14),
        ("routes[1].match.path", 15),
        ("routes[1].match.hosts[0]", 15),
        ("routes[1].backends[0].upstream", 16),
        ("routes[1].backends[0].weight", 16),
        ("routes[2].name", 17),
        ("routes[2].match.methods[0]", 18),
    ] {
        let e = find(&errors, path);
        assert_eq!(line(e), l, "{e}");
    }
    assert_eq!(errors.len(), 12, "{}", ConfigErrors(errors.clone()));
    // Sorted by position.
    let lines: Vec<usize> = errors.iter().map(line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn invalid_and_oversized_regex_rejected() {
    let text = MINIMAL.replace("{ path: /api/* }", "{ path: \"~ ^/(unclosed\" }");
    let e = find(&load_err(&text), "routes[0].match.path").clone();
    assert_eq!(line(&e), 10);
    assert!(
        e.message.contains("invalid regex `^/(unclosed`"),
        "{}",
        e.message
    );

    let text = MINIMAL.replace("{ path: /api/* }", "{ path: \"~ a{1000}{1000}\" }");
    let e = find(&load_err(&text), "routes[0].match.path").clone();
    assert!(e.message.contains("a{1000}{1000}"), "{}", e.message);

    let long = format!("{{ path: \"~ {}\" }}", "x".repeat(5000));
    let text = MINIMAL.replace("{ path: /api/* }", &long);
    let e = find(&load_err(&text), "routes[0].match.path").clone();
    assert!(e.message.contains("too long"), "{}", e.message);
}

#[test]
fn route_rules() {
    let cases: &[(&str, &str, &str)] = &[
        ("{ path: /api/* }", "{ path: api }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: \"/a?x=1\" }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: /a//b }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: /a%2f }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: \"/a;b\" }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: /a/./b }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: /{id}/{id} }", "routes[0].match.path"),
        ("{ path: /api/* }", "{ path: /api/*, hosts: [\"a.*.com\"] }", "routes[0].match.hosts[0]"),
        ("{ path: /api/* }", "{ path: /api/*, hosts: [\"a.com:80\"] }", "routes[0].match.hosts[0]"),
        ("{ path: /api/* }", "{ path: /api/*, methods: [\"\"] }", "routes[0].match.methods[0]"),
        ("{ path: /api/* }", "{ path: /api/*, headers: { \"bad name\": x } }", "routes[0].match.headers[\"bad name\"]"),
        ("{ path: /api/* }", "{ path: /api/*, headers: { x-a: \"a\\nb\" } }", "routes[0].match.headers.x-a"),
        ("    upstream: users\n", "    upstream: users\n    backends: [{upstream: users}]\n", "routes[0]"),
        ("    upstream: users\n", "", "routes[0]"),
        ("    upstream: users\n", "    backends: []\n", "routes[0].backends"),
        ("    upstream: users\n", "    upstream: users\n    rewrite: { path: /x/{id} }\n", "routes[0].rewrite.path"),
        ("    upstream: users\n", "    upstream: users\n    rewrite: { strip_prefix: api }\n", "routes[0].rewrite.strip_prefix"),
        ("    upstream: users\n", "    upstream: users\n    rewrite: {}\n", "routes[0].rewrite"),
        ("    upstream: users\n", "    upstream: users\n    headers: { request: { set: { Transfer-Encoding: chunked } } }\n", "routes[0].headers.request.set.Transfer-Encoding"),
        ("    upstream: users\n", "    upstream: users\n    headers: { request: { set: { connection: close } } }\n", "routes[0].headers.request.set.connection"),
        ("    upstream: users\n", "    upstream: users\n    headers: { response: { set: { x-a: \"a\\r\\nb\" } } }\n", "routes[0].headers.response.set.x-a"),
        ("    upstream: users\n", "    upstream: users\n    headers: { request: { remove: [\"a b\"] } }\n", "routes[0].headers.request.remove[0]"),
        ("    upstream: users\n", "    upstream: users\n    timeout: 0s\n", "routes[0].timeout"),
        ("    upstream: users\n", "    upstream: users\n    max_body: 0\n", "routes[0].max_body"),
        ("  - name: users\n", "  - name: \"\"\n", "routes[0].name"),
    ];
    for (from, to, path) in cases {
        let text = MINIMAL.replace(from, to);
        assert_ne!(text, MINIMAL, "{from:?} not found");
        let errors = load_err(&text);
        let e = find(&errors, path);
        assert!(e.location.is_some(), "{e}");
    }
}

#[test]
fn rewrite_may_use_regex_named_groups() {
    let text = MINIMAL.replace(
        "{ path: /api/* }\n    upstream: users\n",
        "{ path: \"~ ^/v(?P<ver>[0-9]+)/(?<rest>.*)$\" }\n    upstream: users\n    rewrite: { path: \"/api/v{ver}/{rest}\" }\n",
    );
    load_ok(&text);
    let bad = text.replace("{rest}\"", "{other}\"");
    let errors = load_err(&bad);
    let e = find(&errors, "routes[0].rewrite.path");
    assert!(e.message.contains("available: ver, rest"), "{}", e.message);
}

#[test]
fn duplicate_routes_and_identical_matches() {
    let text =
        format!("{MINIMAL}  - name: users\n    match: {{ path: /api/* }}\n    upstream: users\n");
    let errors = load_err(&text);
    assert_eq!(line(find(&errors, "routes[1].name")), 12);
    let e = find(&errors, "routes[1].match");
    assert!(e.message.contains("same requests"), "{}", e.message);
}

#[test]
fn upstream_rules() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "      - url: http://10.0.0.11:9000\n",
            "      - url: 10.0.0.11:9000\n",
            "upstreams.users.targets[0].url",
        ),
        (
            "      - url: http://10.0.0.11:9000\n",
            "      - url: ftp://10.0.0.11:9000\n",
            "upstreams.users.targets[0].url",
        ),
        (
            "      - url: http://10.0.0.11:9000\n",
            "      - url: http://10.0.0.11:9000/api\n",
            "upstreams.users.targets[0].url",
        ),
        (
            "      - url: http://10.0.0.11:9000\n",
            "      - url: \"http://10.0.0.11:9000?a=b\"\n",
            "upstreams.users.targets[0].url",
        ),
        (
            "      - url: http://10.0.0.11:9000\n",
            "      - { url: http://10.0.0.11:9000, weight: 1001 }\n",
            "upstreams.users.targets[0].weight",
        ),
        (
            "      - url: http://10.0.0.11:9000\n",
            "      - url: http://10.0.0.11:9000\n      - url: http://10.0.0.11:9000\n",
            "upstreams.users.targets[1].url",
        ),
        (
            "    targets:\n      - url: http://10.0.0.11:9000\n",
            "    targets: []\n",
            "upstreams.users.targets",
        ),
        (
            "    targets:\n",
            "    timeouts: { connect: 0ms }\n    targets:\n",
            "upstreams.users.timeouts.connect",
        ),
        (
            "  users:\n    targets:",
            "  \"users v2\":\n    targets:",
            "upstreams[\"users v2\"]",
        ),
    ];
    for (from, to, path) in cases {
        let text = MINIMAL.replace(from, to);
        assert_ne!(text, MINIMAL, "{from:?} not found");
        let errors = load_err(&text);
        let e = find(&errors, path);
        assert!(e.location.is_some(), "{e}");
    }
}

#[test]
fn upstream_names_with_dots_use_quoted_paths() {
    let text = MINIMAL
        .replace("  users:\n", "  users.v2:\n")
        .replace("upstream: users", "upstream: users.v2")
        .replace("http://10.0.0.11:9000", "http://x:1/bad");
    let errors = load_err(&text);
    let e = find(&errors, "upstreams[\"users.v2\"].targets[0].url");
    assert_eq!(line(e), 7);
}

#[test]
fn listener_rules() {
    let errors = load_err("listeners: []\n");
    assert_eq!(errors[0].path, "listeners");
    assert_eq!(line(&errors[0]), 1);

    let errors = load_err("routes: []\n");
    assert_eq!(errors[0].path, "listeners");
    assert_eq!(errors[0].location, None);

    let e = &load_err(&MINIMAL.replace("0.0.0.0:8080", "localhost:8080"))[0];
    assert_eq!(e.path, "listeners[0].addr");
    assert_eq!(line(e), 3);
    assert!(e.message.contains("IP:PORT"), "{}", e.message);

    let text = MINIMAL.replace(
        "    addr: 0.0.0.0:8080\n",
        "    addr: 0.0.0.0:8080\n    tls: { certificates: [] }\n  - name: other\n    addr: 0.0.0.0:8080\n",
    );
    let errors = load_err(&text);
    find(&errors, "listeners[0].tls.certificates");
    find(&errors, "listeners[1].addr");
}

#[test]
fn admin_rules() {
    let text = format!("{MINIMAL}admin:\n  addr: 0.0.0.0:9901\n");
    let e = find(&load_err(&text), "admin.addr").clone();
    assert_eq!(line(&e), 13);
    assert!(e.message.contains("admin.token"), "{}", e.message);

    let text = format!("{MINIMAL}admin:\n  addr: 0.0.0.0:9901\n  token: \"\"\n");
    find(&load_err(&text), "admin.addr");

    let text = format!("{MINIMAL}admin:\n  addr: 0.0.0.0:9901\n  token: s3cret\n");
    let config = load_ok(&text);
    assert_eq!(config.admin.token(), Some("s3cret"));

    let text = format!("{MINIMAL}admin:\n  addr: \"[::1]:9901\"\n");
    assert!(load_ok(&text).admin.addr.ip().is_loopback());

    let text = format!("{MINIMAL}admin:\n  addr: 127.0.0.1:8080\n");
    find(&load_err(&text), "admin.addr");
}

#[test]
fn limits_must_be_positive() {
    let text = format!(
        "{MINIMAL}limits:\n  max_request_line: 0\n  max_header_bytes: 0KiB\n  max_headers: 0\n  max_body: 0\n  header_timeout: 0s\n  idle_timeout: 0ms\n  max_connections: 0\n  http2_max_streams: 0\n  drain_timeout: 0s\n"
    );
    let errors = load_err(&text);
    assert_eq!(errors.len(), 9, "{}", ConfigErrors(errors.clone()));
    for (i, name) in [
        "max_request_line",
        "max_header_bytes",
        "max_headers",
        "max_body",
        "header_timeout",
        "idle_timeout",
        "max_connections",
        "http2_max_streams",
        "drain_timeout",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(line(find(&errors, &format!("limits.{name}"))), 13 + i);
    }
}

#[test]
fn limits_accept_units() {
    let text = format!("{MINIMAL}limits:\n  max_body: 1GiB\n  max_request_line: \"4096\"\n  header_timeout: 250ms\n  drain_timeout: 1h\n");
    let l = load_ok(&text).limits;
    assert_eq!(l.max_body, Size(1 << 30));
    assert_eq!(l.max_request_line, Size(4096));
    assert_eq!(l.header_timeout, Duration::from_millis(250));
    assert_eq!(l.drain_timeout, Duration::from_secs(3600));
}

#[test]
fn trusted_proxies_accept_bare_ips() {
    let text =
        format!("{MINIMAL}trusted_proxies: [10.0.0.0/8, 192.168.1.7, \"::1\", \"fd00::/8\"]\n");
    let p = load_ok(&text).trusted_proxies;
    let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"]
    );

    let text = format!("{MINIMAL}trusted_proxies:\n  - 10.0.0.0/8\n  - not-an-ip\n");
    let e = &load_err(&text)[0];
    assert_eq!(e.path, "trusted_proxies[1]");
    assert_eq!(line(e), 14);
}

#[test]
fn env_interpolation_with_defaults() {
    let text = "\
listeners:
  - name: public
    addr: ${ADDR:-0.0.0.0:8080}
admin:
  token: \"${TOKEN}\"
limits:
  max_headers: ${MAX_HEADERS}
  idle_timeout: ${IDLE:-30s}
";
    let loaded = with_env(
        text,
        &[("TOKEN", "t0k"), ("MAX_HEADERS", "50"), ("IDLE", "")],
    )
    .unwrap();
    let c = loaded.config;
    assert_eq!(c.listeners[0].addr.to_string(), "0.0.0.0:8080");
    assert_eq!(c.admin.token.as_deref(), Some("t0k"));
    assert_eq!(c.limits.max_headers, 50);
    assert_eq!(
        c.limits.idle_timeout,
        Duration::from_secs(30),
        "empty value takes the default"
    );

    let loaded = with_env(
        text,
        &[
            ("TOKEN", "t"),
            ("MAX_HEADERS", "7"),
            ("ADDR", "127.0.0.1:1"),
        ],
    )
    .unwrap();
    assert_eq!(loaded.config.listeners[0].addr.to_string(), "127.0.0.1:1");
}

#[test]
fn env_missing_variables_are_all_reported_with_paths() {
    let text = "\
listeners:
  - name: ${NAME}
    addr: 0.0.0.0:8080
admin:
  token: \"${TOKEN}\"
";
    let errors = with_env(text, &[]).unwrap_err().0;
    assert_eq!(errors.len(), 2);
    let e = find(&errors, "listeners[0].name");
    assert_eq!(
        e.location,
        Some(Location {
            line: 2,
            column: 11
        })
    );
    assert!(e.message.contains("`NAME` is not set"), "{}", e.message);
    let e = find(&errors, "admin.token");
    assert_eq!(line(e), 5);

    let errors = with_env(
        "listeners: [{name: \"${bad-name}\", addr: \"0.0.0.0:1\"}]\n",
        &[],
    )
    .unwrap_err()
    .0;
    assert_eq!(errors[0].path, "listeners[0].name");
}

#[test]
fn env_values_cannot_change_structure() {
    // The value of HEADER tries to close the string, add a key, and start a new route.
    let evil = "x\"\n    upstream: evil\n  - name: injected: yes # not a comment\n\t\\ '";
    let text = format!(
        "{}    headers: {{ request: {{ set: {{ x-a: \"${{HEADER}}\" }} }} }}\n",
        MINIMAL
    );
    let errors = with_env(&text, &[("HEADER", evil)]).unwrap_err().0;
    // The value stays one string: it is rejected as a header value, at the right place.
    assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    assert_eq!(errors[0].path, "routes[0].headers.request.set.x-a");
    assert_eq!(line(&errors[0]), 12);

    // In a field without further checks the value arrives verbatim.
    let text = format!("{MINIMAL}admin:\n  token: ${{TOKEN}}\n");
    let config = with_env(&text, &[("TOKEN", evil)]).unwrap().config;
    assert_eq!(config.admin.token.as_deref(), Some(evil));
    assert_eq!(config.routes.len(), 1);

    let config = with_env(&text, &[("TOKEN", "a: b\n- c\n#d")])
        .unwrap()
        .config;
    assert_eq!(config.admin.token.as_deref(), Some("a: b\n- c\n#d"));
}

#[test]
fn env_keeps_line_numbers_exact() {
    // Multi-line scalars (block, plain, quoted) that are interpolated still occupy the same
    // lines, so an error below them points at the right line.
    let text = "\
listeners:
  - name: |
      ${TOKEN}
      more
    addr: 0.0.0.0:8080
  - name: >-
      ${A}
      folded

    addr: 0.0.0.0:8081
  - name: ${A} plain
      multi line
    addr: 0.0.0.0:8082
admin:
  token: \"${B}
    continued\"
  bogus: 1
";
    let vars = [("TOKEN", "x\ny\nz"), ("A", "1"), ("B", "2")];
    let errors = with_env(text, &vars).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "admin.bogus");
    assert_eq!(
        errors[0].location,
        Some(Location {
            line: 17,
            column: 3
        })
    );

    // Without the unknown field, the values arrive as YAML folds them (and are then rejected as
    // listener names at their own lines).
    let text = text.replace("  bogus: 1\n", "");
    let errors = with_env(&text, &vars).unwrap_err().0;
    let lines: Vec<(String, usize)> = errors.iter().map(|e| (e.path.clone(), line(e))).collect();
    assert_eq!(
        lines,
        [
            ("listeners[0].name".to_owned(), 2),
            ("listeners[1].name".to_owned(), 6),
            ("listeners[2].name".to_owned(), 11)
        ]
    );
    assert!(
        errors[0].message.contains("`x\ny\nz\nmore\n`"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[1].message.contains("`1 folded`"),
        "{}",
        errors[1].message
    );
    assert!(
        errors[2].message.contains("`1 plain multi line`"),
        "{}",
        errors[2].message
    );

    let text = text
        .replace(
            "name: |\n      ${TOKEN}\n      more\n",
            "name: |-\n      a${A}\n",
        )
        .replace("      folded\n", "")
        .replace("${A} plain\n      multi line\n", "c${A}\n");
    let config = with_env(&text, &vars).unwrap().config;
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["a1", "1", "c1"]);
    assert_eq!(config.admin.token.as_deref(), Some("2 continued"));
}

#[test]
fn env_type_error_after_interpolation_points_at_the_value() {
    let text = format!("{MINIMAL}limits: {{ max_headers: ${{N}}, max_body: ${{SIZE}} }}\n");
    let errors = with_env(
        &text,
        &[
            ("N", "a very long value that shifts columns"),
            ("SIZE", "1MiB"),
        ],
    )
    .unwrap_err()
    .0;
    assert_eq!(errors[0].path, "limits.max_headers");
    assert_eq!(
        errors[0].location,
        Some(Location {
            line: 12,
            column: 24
        })
    );

    let errors = with_env(&text, &[("N", "10"), ("SIZE", "lots")])
        .unwrap_err()
        .0;
    assert_eq!(errors[0].path, "limits.max_body");
    assert_eq!(
        errors[0].location,
        Some(Location {
            line: 12,
            column: 40
        })
    );
}

#[test]
fn env_escape_and_keys() {
    let text = format!("{MINIMAL}admin:\n  token: \"$${{NOT_A_VAR}} and $HOME\"\n");
    let config = with_env(&text, &[]).unwrap().config;
    assert_eq!(
        config.admin.token.as_deref(),
        Some("${NOT_A_VAR} and $HOME")
    );
}

#[test]
fn braces_in_flow_collections_are_tolerated() {
    // Strict YAML rejects `{id}` and `${X}` unquoted inside `{ ... }`; SPEC.md writes them so.
    let text = MINIMAL
        .replace(
            "{ path: /api/* }",
            "{ path: /api/users/{id}, methods: [GET] }",
        )
        .replace(
            "    upstream: users\n",
            "    upstream: users\n    rewrite: { strip_prefix: /api, path: /v2/users/{id} }\n",
        )
        .replace(
            "      - url: http://10.0.0.11:9000\n",
            "      - { url: ${URL}, weight: 2 }\n",
        );
    let loaded = with_env(&text, &[("URL", "http://127.0.0.1:1")]).unwrap();
    let r = &loaded.config.routes[0];
    assert_eq!(r.r#match.path, "/api/users/{id}");
    assert_eq!(
        r.rewrite.as_ref().unwrap().path.as_deref(),
        Some("/v2/users/{id}")
    );
    assert_eq!(
        loaded.config.upstreams["users"].targets[0].url,
        "http://127.0.0.1:1"
    );
    assert_eq!(
        loaded
            .source_map
            .locate("routes[0].rewrite.path")
            .unwrap()
            .line,
        12
    );

    // Errors still carry paths and lines.
    let bad = text.replace("/v2/users/{id}", "/v2/users/{nope}");
    let errors = with_env(&bad, &[("URL", "http://127.0.0.1:1")])
        .unwrap_err()
        .0;
    assert_eq!(line(find(&errors, "routes[0].rewrite.path")), 12);
    let errors = with_env(&text, &[]).unwrap_err().0;
    assert_eq!(line(find(&errors, "upstreams.users.targets[0].url")), 7);
}

#[test]
fn yaml_syntax_error_has_location() {
    let errors = load_err("listeners:\n  - name: [oops\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "");
    assert!(errors[0].location.is_some());
    assert!(
        errors[0].message.starts_with("invalid YAML"),
        "{}",
        errors[0].message
    );

    let errors = load_err("listeners:\n  - name: a\n   addr: x\n");
    assert!(errors[0].location.is_some(), "{}", errors[0]);
}

#[test]
fn duplicate_keys_are_errors() {
    let text = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    upstream: users\n",
    );
    let e = &load_err(&text)[0];
    assert_eq!(line(e), 12);
    assert!(e.message.contains("duplicate"), "{}", e.message);
}

#[test]
fn multiple_documents_are_rejected() {
    let errors = load_err(&format!("{MINIMAL}---\n{MINIMAL}"));
    assert!(
        errors[0].message.contains("multiple"),
        "{}",
        errors[0].message
    );
}

#[test]
fn load_file_errors_and_success() {
    let err = load_file(Path::new("/nonexistent/gatehouse.yaml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].path, "");
    assert_eq!(err.0[0].location, None);
    assert!(err
        .to_string()
        .starts_with("cannot read /nonexistent/gatehouse.yaml"));

    let dir = std::env::temp_dir().join(format!("gatehouse-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gatehouse.yaml");
    std::fs::write(&file, MINIMAL).unwrap();
    let loaded = load_file(&file).unwrap();
    assert_eq!(loaded.config.routes.len(), 1);
    assert_eq!(
        loaded.source_map.locate("routes[0].upstream"),
        Some(Location {
            line: 11,
            column: 15
        })
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_display_one_per_line() {
    let errors = ConfigErrors(vec![
        ConfigError {
            path: "routes[0].upstream".into(),
            location: Some(Location {
                line: 12,
                column: 15,
            }),
            message: "upstream `nope` is not defined".into(),
        },
        ConfigError {
            path: "listeners".into(),
            location: None,
            message: "at least one listener is required".into(),
        },
        ConfigError {
            path: String::new(),
            location: None,
            message: "cannot read x".into(),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "routes[0].upstream (line 12, column 15): upstream `nope` is not defined\n\
         listeners: at least one listener is required\n\
         cannot read x"
    );
}

#[test]
fn redacted_hides_secrets() {
    let text = format!(
        "{}admin:\n  token: s3cret\n",
        MINIMAL.replace(
            "    upstream: users\n",
            "    upstream: users\n    headers: {request: {set: {Authorization: \"Bearer abc\", x-plain: visible}}}\n    match: {path: /x, headers: {x-api-key: k}}\n",
        ).replace("    match: { path: /api/* }\n", "")
    );
    let config = load_ok(&text);
    let v = config.redacted();
    assert_eq!(v["admin"]["token"], "<redacted>");
    assert_eq!(v["admin"]["addr"], "127.0.0.1:9901");
    let set = &v["routes"][0]["headers"]["request"]["set"];
    assert_eq!(set["authorization"], "<redacted>");
    assert_eq!(set["x-plain"], "visible");
    assert_eq!(
        v["routes"][0]["match"]["headers"]["x-api-key"],
        "<redacted>"
    );
    assert_eq!(v["limits"]["max_body"], "10MiB");
    assert_eq!(v["limits"]["header_timeout"], "10s");
    assert!(!v.to_string().contains("s3cret"));
    assert!(!v.to_string().contains("Bearer abc"));
    // Without a token there is nothing to redact and nothing is invented.
    assert!(load_ok(MINIMAL).redacted()["admin"].get("token").is_none());
}

#[test]
fn serialized_config_round_trips() {
    let config = load_ok(FOUNDATION);
    let json = serde_json::to_string(&config).unwrap();
    // JSON is YAML: the serialized form loads back to the same config.
    let again = load_ok(&json);
    assert_eq!(config, again);
}

#[test]
fn schema_snapshot() {
    insta::assert_json_snapshot!("config_schema", json_schema());
}

#[test]
fn schema_describes_units_and_denies_unknown_fields() {
    let schema = json_schema();
    let text = schema.to_string();
    assert!(text.contains("^[0-9]+(ms|s|m|h|d)$"));
    assert!(text.contains("KiB|MiB|GiB"));
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["routes"].is_object());
}

#[test]
fn crlf_files_keep_lines() {
    let text = format!("{MINIMAL}admin:\n  token: \"${{T}}\"\n  bogus: 1\n").replace('\n', "\r\n");
    let errors = with_env(&text, &[("T", "x")]).unwrap_err().0;
    assert_eq!(errors[0].path, "admin.bogus");
    assert_eq!(line(&errors[0]), 14);
    let text = text.replace("  bogus: 1\r\n", "");
    let config = with_env(&text, &[("T", "x")]).unwrap().config;
    assert_eq!(config.admin.token.as_deref(), Some("x"));
}

#[test]
fn source_map_builds_located_errors_for_later_stages() {
    let loaded = load(MINIMAL).unwrap();
    let e = loaded
        .source_map
        .error("routes[0].match.hosts", "compile-time problem");
    assert_eq!(
        e.location,
        Some(Location {
            line: 10,
            column: 5
        })
    );
    assert_eq!(
        e.to_string(),
        "routes[0].match.hosts (line 10, column 5): compile-time problem"
    );
}

#[test]
fn example_error_output() {
    let text = "\
listeners:
  - name: public
    addr: 0.0.0.0:8080
upstreams:
  users:
    targets: [{ url: \"http://10.0.0.1:9000/v1\" }]
routes:
  - name: users
    match: { path: /users/{id}, methods: [GET, GE T] }
    upstream: nope
    rewrite: { path: /v2/{user} }
";
    let shown = load(text).unwrap_err().to_string();
    assert_eq!(
        shown,
        "upstreams.users.targets[0].url (line 6, column 22): URL `http://10.0.0.1:9000/v1` must not have a path or query: use `rewrite` on the route\n\
         routes[0].match.methods[1] (line 9, column 48): invalid HTTP method `GE T`\n\
         routes[0].upstream (line 10, column 15): upstream `nope` is not defined (defined: users)\n\
         routes[0].rewrite.path (line 11, column 22): rewrite path `/v2/{user}` uses `{user}`, which the route's path does not capture (available: id)"
    );
}

const RATE_LIMITED: &str = "\
listeners:
  - name: public
    addr: 0.0.0.0:8080
redis:
  url: redis://:hunter2@10.0.0.5:6379/2
  timeout: 20ms
  on_error: deny
upstreams:
  users:
    targets:
      - url: http://10.0.0.11:9000
routes:
  - name: users
    match: { path: /api/* }
    upstream: users
    rate_limit:
      - { requests: 100, per: 1m, key: ip }
      - { requests: 10000, per: 1d, key: \"header:X-Api-Key\", scope: shared, burst: 50 }
      - { requests: 1000, per: 1s, key: route, scope: shared, sync: 100ms, name: hot }
    concurrency: 200
";

#[test]
fn rate_limits_parse_and_compile() {
    let config = load_ok(RATE_LIMITED);
    let redis = config.redis.as_ref().expect("redis");
    assert_eq!(redis.timeout, Duration::from_millis(20));
    assert_eq!(redis.on_error, OnError::Deny);
    let r = &config.routes[0];
    assert_eq!(r.rate_limit.len(), 3);
    assert_eq!(r.rate_limit[0].scope, Scope::Local);
    assert_eq!(r.concurrency, Some(crate::Concurrency::route(200)));
    let snap = compile_str(RATE_LIMITED, std::path::Path::new("."), &no_env).expect("compiles");
    let route = &snap.routes[0];
    // Local limits are evaluated first.
    assert_eq!(
        route.rate_limits[0].scope,
        gatehouse_core::snapshot::LimitScope::Local
    );
    assert_eq!(route.rate_limits[1].burst, 50);
    assert_eq!(
        route.rate_limit_policy.as_ref().expect("policy header"),
        "\"ip-1m\";q=100;w=60, \"header:X-Api-Key-1d\";q=10000;w=86400, \"hot\";q=1000;w=1"
    );
    assert_eq!(route.concurrency, Some(200));
    assert_eq!(route.consumer_concurrency, None);
    assert_eq!(
        snap.redis.as_ref().expect("redis").on_error,
        gatehouse_core::snapshot::OnError::Deny
    );
    // A single limit is called "default"; redis defaults are 50ms and allow.
    let one = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    rate_limit: [{ requests: 5, per: 1s, key: ip }]\n",
    );
    let snap = compile_str(&one, std::path::Path::new("."), &no_env).expect("compiles");
    assert_eq!(
        snap.routes[0].rate_limit_policy.as_ref().expect("policy"),
        "\"default\";q=5;w=1"
    );
    let with_redis = format!("{MINIMAL}redis: {{ url: redis://127.0.0.1:6379 }}\n");
    let c = load_ok(&with_redis);
    let r = c.redis.expect("redis");
    assert_eq!(r.timeout, Duration::from_millis(50));
    assert_eq!(r.on_error, OnError::Allow);
}

#[test]
fn redis_password_is_redacted() {
    let v = load_ok(RATE_LIMITED).redacted();
    assert_eq!(v["redis"]["url"], "redis://:<redacted>@10.0.0.5:6379/2");
    assert!(!v.to_string().contains("hunter2"));
    assert_eq!(
        validate::redact_url_password("redis://u:p@h:1"),
        "redis://u:<redacted>@h:1"
    );
    assert_eq!(
        validate::redact_url_password("redis://h:1/0"),
        "redis://h:1/0"
    );
}

#[test]
fn rate_limit_errors_have_paths_and_lines() {
    let text = "\
listeners:
  - name: public
    addr: 0.0.0.0:8080
upstreams:
  users:
    targets:
      - url: http://10.0.0.11:9000
routes:
  - name: users
    match: { path: /api/* }
    upstream: users
    rate_limit:
      - requests: 0
        per: 1s
        key: ip
      - { requests: 10, per: 0s, key: consumer, scope: shared }
      - { requests: 10, per: 1s, key: cookie, sync: 1s, burst: 0 }
      - { requests: 10000000, per: 1s, key: \"header:bad header\" }
      - { requests: 10, per: 1s, key: ip, scope: shared, sync: 2s, name: \"a b\" }
    concurrency: 0
";
    let errors = load_err(text);
    assert_eq!(line(find(&errors, "routes[0].rate_limit[0].requests")), 13);
    assert_eq!(line(find(&errors, "routes[0].rate_limit[1].per")), 16);
    let consumer = find(&errors, "routes[0].rate_limit[1].key");
    assert!(
        consumer.message.contains("needs `auth` on this route"),
        "{consumer}"
    );
    assert!(find(&errors, "routes[0].rate_limit[1].scope")
        .message
        .contains("needs a top-level `redis` section"));
    assert!(find(&errors, "routes[0].rate_limit[2].key")
        .message
        .contains("header:NAME"));
    assert!(find(&errors, "routes[0].rate_limit[2].sync")
        .message
        .contains("scope: shared"));
    find(&errors, "routes[0].rate_limit[2].burst");
    assert!(find(&errors, "routes[0].rate_limit[3].per")
        .message
        .contains("microsecond"));
    find(&errors, "routes[0].rate_limit[3].key");
    assert!(find(&errors, "routes[0].rate_limit[4].sync")
        .message
        .contains("at most `per`"));
    find(&errors, "routes[0].rate_limit[4].name");
    assert_eq!(line(find(&errors, "routes[0].concurrency")), 20);
    // Unknown fields inside a limit are errors too.
    let typo = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    rate_limit:\n      - { requests: 5, per: 1s, key: ip, scpoe: shared }\n",
    );
    let errors = load_err(&typo);
    assert!(errors[0].message.contains("unknown field"), "{}", errors[0]);
    assert_eq!(errors[0].path, "routes[0].rate_limit[0].scpoe");
}

#[test]
fn auth_failures_limit_compiles_and_validates() {
    // Off by default.
    let snap = compile_str(MINIMAL, std::path::Path::new("."), &no_env).expect("compiles");
    assert!(snap.limits.auth_failures.is_none());
    let on = format!("limits:\n  auth_failures: {{ requests: 10, per: 1m }}\n{MINIMAL}");
    let snap = compile_str(&on, std::path::Path::new("."), &no_env).expect("compiles");
    let spec = snap.limits.auth_failures.as_ref().expect("auth_failures");
    assert_eq!((spec.requests, spec.burst), (10, 10));
    assert_eq!(spec.per, std::time::Duration::from_secs(60));
    assert_eq!(spec.key, gatehouse_core::snapshot::LimitKey::Ip);
    assert_eq!(spec.scope, gatehouse_core::snapshot::LimitScope::Local);

    let bad = format!(
        "limits:\n  max_headers: 50\n  auth_failures:\n    requests: 0\n    per: 0s\n    burst: 0\n{MINIMAL}"
    );
    let errors = load_err(&bad);
    assert_eq!(line(find(&errors, "limits.auth_failures.requests")), 4);
    assert_eq!(line(find(&errors, "limits.auth_failures.per")), 5);
    assert_eq!(line(find(&errors, "limits.auth_failures.burst")), 6);
    let fast = format!("limits:\n  auth_failures: {{ requests: 10000000, per: 1s }}\n{MINIMAL}");
    assert!(find(&load_err(&fast), "limits.auth_failures.per")
        .message
        .contains("microsecond"));
    let typo = format!("limits:\n  auth_failures: {{ requests: 5, per: 1m, key: ip }}\n{MINIMAL}");
    let errors = load_err(&typo);
    assert!(errors[0].message.contains("unknown field"), "{}", errors[0]);
    assert_eq!(errors[0].path, "limits.auth_failures.key");
    assert_eq!(line(&errors[0]), 2);
}

#[test]
fn redis_cluster_parses_compiles_and_is_redacted() {
    let text = format!(
        "{MINIMAL}redis:\n  cluster:\n    - redis://:hunter2@10.0.0.5:7000\n    - redis://:hunter2@10.0.0.6:7000/0\n  timeout: 30ms\n"
    );
    let config = load_ok(&text);
    let r = config.redis.as_ref().expect("redis");
    assert_eq!(r.url, None);
    assert_eq!(r.cluster.as_ref().map(Vec::len), Some(2));
    let v = config.redacted();
    assert_eq!(
        v["redis"]["cluster"][0],
        "redis://:<redacted>@10.0.0.5:7000"
    );
    assert_eq!(
        v["redis"]["cluster"][1],
        "redis://:<redacted>@10.0.0.6:7000/0"
    );
    assert!(v["redis"].get("url").is_none());
    assert!(!v.to_string().contains("hunter2"));
    let snap = compile_str(&text, std::path::Path::new("."), &no_env).expect("compiles");
    let spec = snap.redis.as_ref().expect("redis");
    assert_eq!(
        spec.endpoint,
        gatehouse_core::snapshot::RedisEndpoint::Cluster(vec![
            "redis://:hunter2@10.0.0.5:7000".to_owned(),
            "redis://:hunter2@10.0.0.6:7000/0".to_owned(),
        ])
    );
    assert_eq!(spec.timeout, std::time::Duration::from_millis(30));
    // The one-server form compiles to a standalone endpoint.
    let snap = compile_str(RATE_LIMITED, std::path::Path::new("."), &no_env).expect("compiles");
    assert_eq!(
        snap.redis.as_ref().expect("redis").endpoint,
        gatehouse_core::snapshot::RedisEndpoint::Standalone(
            "redis://:hunter2@10.0.0.5:6379/2".to_owned()
        )
    );
}

#[test]
fn redis_cluster_rules() {
    // Lines: MINIMAL has 11 lines, so `redis:` is line 12.
    let base = MINIMAL.lines().count();
    let neither = format!("{MINIMAL}redis:\n  timeout: 10ms\n");
    let errors = load_err(&neither);
    let e = find(&errors, "redis");
    assert!(
        e.message.contains("`url`") && e.message.contains("`cluster`"),
        "{e}"
    );
    assert_eq!(line(e), base + 1);

    let both = format!("{MINIMAL}redis:\n  url: redis://h:1\n  cluster: [redis://h:2]\n");
    let errors = load_err(&both);
    let e = find(&errors, "redis.cluster");
    assert!(e.message.contains("exclusive"), "{e}");
    assert_eq!(line(e), base + 3);

    let empty = format!("{MINIMAL}redis:\n  cluster: []\n");
    let errors = load_err(&empty);
    assert!(find(&errors, "redis.cluster")
        .message
        .contains("at least one"));

    let bad = format!(
        "{MINIMAL}redis:\n  cluster:\n    - redis://h:1\n    - http://:pw@h:2\n    - redis://:pw@h:3/2\n    - redis://h:1\n"
    );
    let errors = load_err(&bad);
    let e = find(&errors, "redis.cluster[1]");
    assert!(e.message.contains("must start with `redis://`"), "{e}");
    assert_eq!(line(e), base + 4);
    let e = find(&errors, "redis.cluster[2]");
    assert!(e.message.contains("only database 0"), "{e}");
    assert!(!e.message.contains("pw"), "{e}");
    assert_eq!(line(e), base + 5);
    let e = find(&errors, "redis.cluster[3]");
    assert!(e.message.contains("duplicate"), "{e}");
    assert_eq!(line(e), base + 6);
    assert!(errors.iter().all(|e| e.path != "redis.cluster[0]"));

    let typo = format!("{MINIMAL}redis:\n  clustr: [redis://h:1]\n");
    let errors = load_err(&typo);
    assert!(errors[0].message.contains("unknown field"), "{}", errors[0]);
}

#[test]
fn redis_section_rules() {
    for (url, msg) in [
        ("http://x:1", "must start with `redis://`"),
        ("rediss://x:1", "not supported yet"),
        ("redis://:pw@", "no valid host"),
        ("redis://h:0", "invalid port"),
        ("redis://h:1/x", "database number"),
    ] {
        let text = format!("{MINIMAL}redis: {{ url: \"{url}\", timeout: 0ms }}\n");
        let errors = load_err(&text);
        let e = find(&errors, "redis.url");
        assert!(e.message.contains(msg), "{url}: {e}");
        assert!(!e.message.contains("pw"), "{e}");
        find(&errors, "redis.timeout");
    }
    let dup = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    rate_limit:\n      - { requests: 5, per: 1s, key: ip }\n      - { requests: 50, per: 1s, key: ip }\n",
    );
    let errors = load_err(&dup);
    assert!(find(&errors, "routes[0].rate_limit[1]")
        .message
        .contains("already used"));
}

const AUTH_BASE: &str = "listeners:\n  - name: l\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: http://127.0.0.1:9\n";

fn auth_errors(rest: &str) -> Vec<ConfigError> {
    load_err(&format!("{AUTH_BASE}{rest}"))
}

#[test]
fn auth_config_loads() {
    let text = format!(
        "{AUTH_BASE}consumers:\n  - name: acme\n    groups: [gold]\n    api_keys: [\"sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"]\n\
         auth:\n  k:\n    type: api_key\n    in: [header:x-api-key, query:api_key]\n    hide_credentials: true\n\
         \x20 j:\n    type: jwt\n    jwks_url: https://idp.example.com/jwks\n    algorithms: [RS256, ES256]\n    consumer_claim: sub\n    forward_claims: {{ sub: x-user-id }}\n\
         \x20 i:\n    type: introspection\n    url: https://idp.example.com/introspect\n    client_id: gw\n    client_secret: very-secret\n\
         \x20 f:\n    type: forward\n    url: http://127.0.0.1:9100/check\n    copy_headers: [x-user-id]\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [j, k] }}\n    allow: {{ groups: [gold], scopes: [users:read], ips: [0.0.0.0/0] }}\n\
         \x20   cors: {{ origins: [\"https://app.example.com\"], credentials: true }}\n"
    );
    let loaded = load(&text).expect("valid");
    let red = loaded.config.redacted().to_string();
    assert!(!red.contains("very-secret"), "{red}");
    assert!(red.contains(REDACTED));
}

#[test]
fn auth_validation_errors_have_paths_and_lines() {
    let errs = auth_errors(
        "consumers:\n  - name: a\n    api_keys: [\"plain-text-key\"]\n\
         auth:\n  j:\n    type: jwt\n    keys: [{ secret: \"0123456789abcdef0123456789abcdef\" }]\n    algorithms: [none, HS256, RS256]\n\
         routes:\n  - name: r\n    match: { path: /* }\n    upstream: app\n    auth: { any_of: [missing] }\n\
         \x20   cors: { origins: [\"*\"], credentials: true }\n",
    );
    let find = |path: &str, needle: &str| {
        errs.iter()
            .find(|e| e.path == path && e.message.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` at {path}: {errs:#?}"))
            .clone()
    };
    assert_eq!(
        find("consumers[0].api_keys[0]", "sha256")
            .location
            .map(|l| l.line),
        Some(10)
    );
    assert_eq!(
        find("auth.j.algorithms[0]", "never accepted")
            .location
            .map(|l| l.line),
        Some(15)
    );
    find("auth.j.algorithms", "confusion");
    find("auth.j.keys[0]", "HMAC secret cannot verify");
    assert_eq!(
        find("routes[0].auth.any_of[0]", "not defined")
            .location
            .map(|l| l.line),
        Some(20)
    );
    find("routes[0].cors.origins[0]", "credentials");
}

#[test]
fn auth_validation_hs_with_public_key_and_allow_without_auth() {
    let errs = auth_errors(
        "auth:\n  j:\n    type: jwt\n    keys: [{ pem: \"-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\\n-----END PUBLIC KEY-----\\n\" }]\n    algorithms: [HS256]\n\
         routes:\n  - name: r\n    match: { path: /* }\n    upstream: app\n    allow: { groups: [gold] }\n",
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "auth.j.keys[0]" && e.message.contains("never an HMAC secret")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.path == "routes[0].allow.groups"
            && e.message.contains("needs an authenticated route")),
        "{errs:#?}"
    );
    let errs = auth_errors("auth:\n  j:\n    type: jwt\n    jwks_url: ftp://x\n    algorithms: [ES512]\n    leeway: 5m\n    cache_size: 1000000\n");
    for (p, m) in [
        ("auth.j.jwks_url", "http"),
        ("auth.j.algorithms[0]", "ES512"),
        ("auth.j.leeway", "at most"),
        ("auth.j.cache_size", "at most 100000"),
    ] {
        assert!(
            errs.iter().any(|e| e.path == p && e.message.contains(m)),
            "{p}: {errs:#?}"
        );
    }
    let errs = auth_errors("auth:\n  k:\n    type: api_key\n    in: [cookie:x]\n    bogus: 1\n");
    assert!(!errs.is_empty());
}

const CONSUMER_ROUTE: &str = "consumers:\n  - name: acme\n    api_keys: [\"sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"]\n\
auth:\n  k:\n    type: api_key\n    in: [header:x-api-key]\n\
routes:\n  - name: r\n    match: { path: /* }\n    upstream: app\n    auth: { any_of: [k] }\n";

#[test]
fn concurrency_accepts_an_integer_or_route_and_consumer() {
    // The mapping form, on an authenticated route.
    let text =
        format!("{AUTH_BASE}{CONSUMER_ROUTE}    concurrency: {{ route: 50, consumer: 2 }}\n");
    let config = load_ok(&text);
    let c = config.routes[0].concurrency.expect("concurrency");
    assert_eq!((c.route, c.consumer), (Some(50), Some(2)));
    let snap = compile_str(&text, std::path::Path::new("."), &no_env).expect("compiles");
    assert_eq!(snap.routes[0].concurrency, Some(50));
    assert_eq!(snap.routes[0].consumer_concurrency, Some(2));
    // Consumer only, in block style.
    let text = format!("{AUTH_BASE}{CONSUMER_ROUTE}    concurrency:\n      consumer: 3\n");
    let snap = compile_str(&text, std::path::Path::new("."), &no_env).expect("compiles");
    assert_eq!(snap.routes[0].concurrency, None);
    assert_eq!(snap.routes[0].consumer_concurrency, Some(3));
    // Round trip: the integer form stays an integer, the mapping a mapping.
    let json = serde_json::to_value(crate::Concurrency::route(7)).expect("serializes");
    assert_eq!(json, serde_json::json!(7));
    let json = serde_json::to_value(crate::Concurrency {
        route: None,
        consumer: Some(4),
    })
    .expect("serializes");
    assert_eq!(json, serde_json::json!({ "consumer": 4 }));
}

#[test]
fn concurrency_validation_errors_have_paths_and_lines() {
    // `consumer` on a public route.
    let public = MINIMAL.replace(
        "    upstream: users\n",
        "    upstream: users\n    concurrency:\n      route: 10\n      consumer: 1\n",
    );
    let errors = load_err(&public);
    let e = find(&errors, "routes[0].concurrency.consumer");
    assert!(e.message.contains("needs `auth` on this route"), "{e}");
    assert_eq!(line(e), 14);
    // Zeroes, an empty mapping and a typo.
    let text = format!("{AUTH_BASE}{CONSUMER_ROUTE}    concurrency: {{ route: 0, consumer: 0 }}\n");
    let errors = load_err(&text);
    find(&errors, "routes[0].concurrency.route");
    find(&errors, "routes[0].concurrency.consumer");
    let text = format!("{AUTH_BASE}{CONSUMER_ROUTE}    concurrency: {{}}\n");
    assert!(find(&load_err(&text), "routes[0].concurrency")
        .message
        .contains("set `route`, `consumer` or both"));
    let text = format!("{AUTH_BASE}{CONSUMER_ROUTE}    concurrency: {{ consumr: 1 }}\n");
    let errors = load_err(&text);
    assert!(errors[0].message.contains("unknown field"), "{}", errors[0]);
    assert_eq!(errors[0].path, "routes[0].concurrency.consumr");
}
