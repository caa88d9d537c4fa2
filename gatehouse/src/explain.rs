//! `gatehouse explain`: which route a request matches and the policy chain that would run,
//! computed with the same normalizer and router the data plane uses.

use std::path::Path;
use std::process::ExitCode;

use gatehouse_core::router::RouteMatch;
use gatehouse_core::snapshot::RouteTarget;

pub fn run(config: &Path, method: &str, url: &str, headers: &[String]) -> ExitCode {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            return ExitCode::FAILURE;
        }
    };
    let base = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let snap = match gatehouse_config::compile_str(&text, base, &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{}: {e}", config.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("invalid method `{method}`");
        return ExitCode::FAILURE;
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        eprintln!("invalid URL `{url}`");
        return ExitCode::FAILURE;
    };
    let mut map = http::HeaderMap::new();
    for h in headers {
        let Some((n, v)) = h.split_once(':') else {
            eprintln!("invalid header `{h}` (want `Name: value`)");
            return ExitCode::FAILURE;
        };
        match (
            http::HeaderName::from_bytes(n.trim().as_bytes()),
            http::HeaderValue::from_str(v.trim()),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => {
                eprintln!("invalid header `{h}`");
                return ExitCode::FAILURE;
            }
        }
    }
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    let norm = match gatehouse_core::normalize::normalize_path(uri.path()) {
        Ok(n) => n,
        Err(e) => {
            println!("request: {method} {url}");
            println!("result:  400 bad_request (path rejected by the normalizer: {e})");
            return ExitCode::SUCCESS;
        }
    };
    println!("request:    {method} {url}");
    println!(
        "normalized: host={} path={} (routing on {})",
        if host.is_empty() { "-" } else { &host },
        norm.forward,
        norm.route
    );
    let host_opt = if host.is_empty() {
        None
    } else {
        Some(host.as_str())
    };
    match snap.router.find(host_opt, &norm.route, &method, &map) {
        RouteMatch::NotFound => println!("result:     404 no_route"),
        RouteMatch::MethodNotAllowed { allow } => println!(
            "result:     405 method_not_allowed (allow: {})",
            allow
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        RouteMatch::Found { route, params } => {
            let r = &snap.routes[route];
            println!("route:      {} ({})", r.name, r.match_desc);
            let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !p.is_empty() {
                println!("params:     {}", p.join(" "));
            }
            let upstream_path = gatehouse_proxy::policy::rewrite::upstream_path(
                &r.rewrite,
                &norm.forward,
                uri.query(),
                &params,
            );
            let backends = match &r.target {
                RouteTarget::Upstream(i) => snap.upstreams[*i].name.clone(),
                RouteTarget::Weighted { backends, total } => backends
                    .iter()
                    .map(|(i, w)| {
                        format!("{} {}%", snap.upstreams[*i].name, w * 100 / (*total).max(1))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let mut limits: Vec<String> = r
                .rate_limits
                .iter()
                .map(|l| {
                    let key = match &l.key {
                        gatehouse_core::snapshot::LimitKey::Ip => "ip".to_string(),
                        gatehouse_core::snapshot::LimitKey::Route => "route".to_string(),
                        gatehouse_core::snapshot::LimitKey::Header(h) => format!("header:{h}"),
                        gatehouse_core::snapshot::LimitKey::Consumer => "consumer".to_string(),
                    };
                    let scope = match (l.scope, l.sync) {
                        (gatehouse_core::snapshot::LimitScope::Local, _) => "local".to_string(),
                        (_, None) => "shared".to_string(),
                        (_, Some(s)) => format!("shared, sync {}ms", s.as_millis()),
                    };
                    format!(
                        "{} per {}ms by {key} (burst {}, {scope})",
                        l.requests,
                        l.per.as_millis(),
                        l.burst
                    )
                })
                .collect();
            if let Some(c) = r.concurrency {
                limits.push(format!("{c} in flight"));
            }
            if let Some(c) = r.consumer_concurrency {
                limits.push(format!("{c} in flight per consumer"));
            }
            let limits = if limits.is_empty() {
                "not configured".to_string()
            } else {
                limits.join("; ")
            };
            let auth = &snap.auth;
            let cors_desc = match &r.cors {
                None => "not configured".to_string(),
                Some(c) => format!(
                    "origins {}; methods {}{}; preflight answered here, before auth",
                    if c.any_origin {
                        "*".to_string()
                    } else {
                        let mut o: Vec<&str> = c.origins.iter().map(String::as_str).collect();
                        o.sort();
                        o.join(", ")
                    },
                    c.methods_header.to_str().unwrap_or("?"),
                    if c.credentials { "; credentials" } else { "" }
                ),
            };
            let ip_desc = if r.allow.has_ip_rules() {
                format!(
                    "allow {} deny {}",
                    if r.allow.ips.is_empty() {
                        "any".to_string()
                    } else {
                        r.allow
                            .ips
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                    if r.allow.deny_ips.is_empty() {
                        "none".to_string()
                    } else {
                        r.allow
                            .deny_ips
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                )
            } else {
                "not configured".into()
            };
            let auth_desc = match &r.auth {
                None => "public route".to_string(),
                Some(req) => {
                    let names: Vec<String> = req
                        .providers()
                        .iter()
                        .map(|&i| {
                            format!(
                                "{} ({})",
                                auth.providers[i].name,
                                auth.providers[i].kind.type_name()
                            )
                        })
                        .collect();
                    let mode = match req {
                        gatehouse_core::auth::AuthRequirement::AnyOf(_) => "any of",
                        gatehouse_core::auth::AuthRequirement::AllOf(_) => "all of",
                    };
                    let failures = snap
                        .limits
                        .auth_failures
                        .as_ref()
                        .map(|f| {
                            format!(
                                "; after {} failed attempts per client IP (refill {} per {}ms): 429 before checking",
                                f.burst,
                                f.requests,
                                f.per.as_millis()
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "{mode}: {}; 401 + WWW-Authenticate on failure{failures}",
                        names.join(", ")
                    )
                }
            };
            let mut authz: Vec<String> = Vec::new();
            if !r.allow.groups.is_empty() {
                authz.push(format!("groups any of [{}]", r.allow.groups.join(", ")));
            }
            if !r.allow.scopes.is_empty() {
                authz.push(format!("scopes all of [{}]", r.allow.scopes.join(", ")));
            }
            for (k, v) in &r.allow.claims {
                authz.push(format!("claim {k}={v}"));
            }
            let authz_desc = if authz.is_empty() {
                "not configured".to_string()
            } else {
                format!("{}; 403 on failure", authz.join("; "))
            };
            println!("policy chain:");
            let steps: Vec<(&str, String)> = vec![
                ("normalize", "decode unreserved, remove dot segments, merge slashes".into()),
                ("route", format!("matched `{}`", r.name)),
                ("cors preflight", cors_desc),
                ("ip allow/deny", ip_desc),
                ("authenticate", auth_desc),
                ("authorize", authz_desc),
                ("rate limit / concurrency", limits),
                (
                    "request transform",
                    format!(
                        "strip hop-by-hop and spoofable headers; add x-forwarded-*, x-request-id, traceparent; path -> {upstream_path}{}; max_body {} bytes",
                        if r.request_headers.is_empty() { String::new() } else { format!("; header ops: set {} remove {}", r.request_headers.set.len(), r.request_headers.remove.len()) },
                        r.max_body
                    ),
                ),
                ("cache lookup", "not configured".into()),
                (
                    "upstream call",
                    format!(
                        "{} -> {backends}{}",
                        if r.websocket { "proxy (websocket upgrades allowed)" } else { "proxy" },
                        r.timeout.map(|t| format!(", timeout {}ms", t.as_millis())).unwrap_or_default()
                    ),
                ),
                (
                    "response transform",
                    if r.response_headers.is_empty() { "strip hop-by-hop".into() } else { format!("strip hop-by-hop; set {} remove {}", r.response_headers.set.len(), r.response_headers.remove.len()) },
                ),
                ("cache store", "not configured".into()),
                ("log and metrics", "access log line, request/latency metrics".into()),
            ];
            for (i, (name, what)) in steps.iter().enumerate() {
                println!("  {:>2}. {name:<26} {what}", i + 1);
            }
        }
    }
    ExitCode::SUCCESS
}
