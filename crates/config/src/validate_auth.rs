//! Semantic checks for consumers, auth providers and the routes' `auth`, `allow` and `cors`.

use std::collections::{HashMap, HashSet};

use gatehouse_core::auth::{JwsAlg, JwtKey};
use http::Method;

use crate::model::{AuthProvider, Config, CorsConfig, JwtAuth, JwtKeyConfig, Route};
use crate::source_map::{push_index, push_key};
use crate::validate::{check_header_name, is_valid_name, FORBIDDEN_SET_HEADERS};
use crate::ConfigError;

/// Headers an identity may not be copied into: framing, hop-by-hop and routing headers.
const FORBIDDEN_IDENTITY_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "forwarded",
];

pub const MAX_LEEWAY_SECS: u64 = 60;
/// Verified JWTs remembered per provider; each costs up to ~4 KiB (tokens longer than that
/// are never cached), so this bounds the cache at a few hundred MiB.
pub const MAX_JWT_CACHE: usize = 100_000;

pub(crate) fn validate(config: &Config, errors: &mut Vec<ConfigError>) {
    let mut err = |path: &str, m: String| errors.push(ConfigError::at(path, m));
    consumers(config, &mut err);
    for (name, p) in &config.auth {
        let path = push_key("auth", name);
        if !is_valid_name(name) {
            err(
                &path,
                format!("invalid auth provider name `{name}`: use [A-Za-z0-9_.-]+"),
            );
        }
        provider(&path, p, &mut err);
    }
    for (i, r) in config.routes.iter().enumerate() {
        route(&push_index("routes", i), r, config, &mut err);
    }
}

/// Parses `sha256:<64 hex>` into the digest.
pub fn parse_digest(s: &str) -> Result<[u8; 32], String> {
    let hex = s.strip_prefix("sha256:").ok_or_else(|| {
        "API keys are stored as digests: `sha256:<64 hex digits>` (printf %s KEY | sha256sum)"
            .to_string()
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid SHA-256 digest `{s}`: expected 64 hex digits after `sha256:`"
        ));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| "invalid hex")?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| "invalid hex")?;
    }
    Ok(out)
}

fn consumers(config: &Config, err: &mut impl FnMut(&str, String)) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut digests: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, c) in config.consumers.iter().enumerate() {
        let path = push_index("consumers", i);
        if !is_valid_name(&c.name) {
            err(
                &push_key(&path, "name"),
                format!("invalid consumer name `{}`: use [A-Za-z0-9_.-]+", c.name),
            );
        } else if let Some(first) = names.insert(&c.name, i) {
            err(
                &push_key(&path, "name"),
                format!(
                    "duplicate consumer name `{}` (first at consumers[{first}])",
                    c.name
                ),
            );
        }
        for (j, g) in c.groups.iter().enumerate() {
            if !is_valid_name(g) {
                err(
                    &push_index(&push_key(&path, "groups"), j),
                    format!("invalid group name `{g}`: use [A-Za-z0-9_.-]+"),
                );
            }
        }
        for (j, k) in c.api_keys.iter().enumerate() {
            let kp = push_index(&push_key(&path, "api_keys"), j);
            match parse_digest(k) {
                Err(e) => err(&kp, e),
                Ok(d) => {
                    if let Some(first) = digests.insert(d, i) {
                        err(
                            &kp,
                            format!("this API key digest is already used by consumers[{first}]"),
                        );
                    }
                }
            }
        }
    }
}

/// `http(s)://host[:port]/path` for auth services and JWKS endpoints.
pub fn check_service_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("URL `{url}` must start with http:// or https://")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => {}
        _ => {
            return Err(format!(
                "URL `{url}` needs a host (and must not contain credentials)"
            ))
        }
    }
    if url.contains('#') {
        return Err(format!("URL `{url}` must not contain a fragment"));
    }
    Ok(uri)
}

fn identity_header(path: &str, name: &str, err: &mut impl FnMut(&str, String)) {
    match check_header_name(name) {
        Err(e) => err(path, e),
        Ok(lower) => {
            if FORBIDDEN_SET_HEADERS.contains(&lower.as_str())
                || FORBIDDEN_IDENTITY_HEADERS.contains(&lower.as_str())
                || lower.contains('_')
            {
                err(
                    path,
                    format!("header `{lower}` cannot carry identity data (framing, routing or credential header)"),
                );
            }
        }
    }
}

fn provider(path: &str, p: &AuthProvider, err: &mut impl FnMut(&str, String)) {
    match p {
        AuthProvider::Jwt(j) => jwt(path, j, err),
        AuthProvider::ApiKey(a) => {
            let ip = push_key(path, "in");
            if a.r#in.is_empty() {
                err(&ip, "at least one key location is required".into());
            }
            for (i, loc) in a.r#in.iter().enumerate() {
                if let Err(e) = parse_key_location(loc) {
                    err(&push_index(&ip, i), e);
                }
            }
        }
        AuthProvider::Introspection(x) => {
            if let Err(e) = check_service_url(&x.url) {
                err(&push_key(path, "url"), e);
            }
            if x.client_secret.is_some() && x.client_secret_file.is_some() {
                err(
                    &push_key(path, "client_secret_file"),
                    "set `client_secret` or `client_secret_file`, not both".into(),
                );
            }
            if x.client_id.is_none()
                && (x.client_secret.is_some() || x.client_secret_file.is_some())
            {
                err(
                    &push_key(path, "client_id"),
                    "a client secret needs `client_id`".into(),
                );
            }
            if x.cache_for.is_zero() {
                err(
                    &push_key(path, "cache_for"),
                    "must be greater than 0".into(),
                );
            }
            if x.timeout.is_zero() {
                err(&push_key(path, "timeout"), "must be greater than 0".into());
            }
            for (claim, header) in &x.forward_claims {
                identity_header(
                    &push_key(&push_key(path, "forward_claims"), claim),
                    header,
                    err,
                );
            }
        }
        AuthProvider::Forward(f) => {
            if let Err(e) = check_service_url(&f.url) {
                err(&push_key(path, "url"), e);
            }
            if f.timeout.is_zero() {
                err(&push_key(path, "timeout"), "must be greater than 0".into());
            }
            for (i, h) in f.copy_headers.iter().enumerate() {
                identity_header(&push_index(&push_key(path, "copy_headers"), i), h, err);
            }
        }
    }
}

/// `header:NAME` or `query:NAME`.
pub fn parse_key_location(loc: &str) -> Result<(bool, String), String> {
    if let Some(h) = loc.strip_prefix("header:") {
        let lower = check_header_name(h)?;
        return Ok((true, lower));
    }
    if let Some(q) = loc.strip_prefix("query:") {
        if q.is_empty()
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!("invalid query parameter name `{q}`"));
        }
        return Ok((false, q.to_string()));
    }
    Err(format!(
        "key location `{loc}` must be `header:NAME` or `query:NAME`"
    ))
}

fn jwt(path: &str, j: &JwtAuth, err: &mut impl FnMut(&str, String)) {
    let apath = push_key(path, "algorithms");
    if j.algorithms.is_empty() {
        err(
            &apath,
            "list the accepted algorithms (e.g. [RS256]); they are pinned per provider".into(),
        );
    }
    let mut algs = Vec::new();
    for (i, a) in j.algorithms.iter().enumerate() {
        let p = push_index(&apath, i);
        match JwsAlg::parse(a) {
            Some(alg) => algs.push(alg),
            None if a.eq_ignore_ascii_case("none") => err(
                &p,
                "`none` (unsigned tokens) is never accepted".into(),
            ),
            None if a == "ES512" => err(
                &p,
                "ES512 (P-521) is not supported; use ES256, ES384, EdDSA or RS/PS".into(),
            ),
            None => err(
                &p,
                format!("unknown algorithm `{a}` (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512; names are case-sensitive)"),
            ),
        }
    }
    let hmac = algs.iter().any(|a| a.is_hmac());
    let public = algs.iter().any(|a| !a.is_hmac());
    if hmac && public {
        err(
            &apath,
            "HS* and public-key algorithms cannot share a provider (algorithm confusion); use two providers".into(),
        );
    }
    if j.jwks_url.is_none() && j.keys.is_empty() {
        err(path, "set `jwks_url` or `keys`".into());
    }
    if let Some(url) = &j.jwks_url {
        if let Err(e) = check_service_url(url) {
            err(&push_key(path, "jwks_url"), e);
        }
        if hmac {
            err(
                &push_key(path, "jwks_url"),
                "HS* algorithms need a shared secret, not a JWKS of public keys".into(),
            );
        }
    }
    if let Some(s) = &j.jwks {
        let sp = push_key(path, "jwks");
        for (name, d) in [
            ("ttl", s.ttl),
            ("min_refresh", s.min_refresh),
            ("max_stale", s.max_stale),
            ("timeout", s.timeout),
        ] {
            if d.is_zero() {
                err(&push_key(&sp, name), "must be greater than 0".into());
            }
        }
        if s.max_size.0 == 0 {
            err(&push_key(&sp, "max_size"), "must be greater than 0".into());
        }
    }
    for (i, k) in j.keys.iter().enumerate() {
        let kp = push_index(&push_key(path, "keys"), i);
        key(&kp, k, hmac, public, err);
    }
    if j.leeway.get().as_secs() > MAX_LEEWAY_SECS {
        err(
            &push_key(path, "leeway"),
            format!("leeway is at most {MAX_LEEWAY_SECS}s"),
        );
    }
    if j.max_token_size.0 == 0 || j.max_token_size.0 > 64 * 1024 {
        err(
            &push_key(path, "max_token_size"),
            "must be between 1 and 64KiB".into(),
        );
    }
    if j.cache_size > MAX_JWT_CACHE {
        err(
            &push_key(path, "cache_size"),
            format!("at most {MAX_JWT_CACHE} (0 turns the cache off)"),
        );
    }
    if j.consumer_claim.as_deref() == Some("") {
        err(
            &push_key(path, "consumer_claim"),
            "must not be empty".into(),
        );
    }
    for (claim, header) in &j.forward_claims {
        identity_header(
            &push_key(&push_key(path, "forward_claims"), claim),
            header,
            err,
        );
    }
}

fn key(path: &str, k: &JwtKeyConfig, hmac: bool, public: bool, err: &mut impl FnMut(&str, String)) {
    let sources = [
        k.file.is_some(),
        k.pem.is_some(),
        k.jwk.is_some(),
        k.secret.is_some(),
        k.secret_file.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources != 1 {
        err(
            path,
            "set exactly one of `file`, `pem`, `jwk`, `secret`, `secret_file`".into(),
        );
        return;
    }
    let is_secret = k.secret.is_some() || k.secret_file.is_some();
    if is_secret && public {
        err(
            path,
            "an HMAC secret cannot verify RS/PS/ES/EdDSA tokens".into(),
        );
    }
    if let Some(s) = &k.secret {
        if s.len() < 32 {
            err(
                &push_key(path, "secret"),
                format!(
                    "HMAC secret of {} bytes is too short (at least 32)",
                    s.len()
                ),
            );
        }
    }
    let parsed = if let Some(pem) = &k.pem {
        Some(JwtKey::from_pem(pem.as_bytes(), k.kid.clone()).map_err(|e| ("pem", e)))
    } else {
        k.jwk
            .as_ref()
            .map(|jwk| JwtKey::from_jwk(jwk).map_err(|e| ("jwk", e)))
    };
    match parsed {
        Some(Err((field, e))) => err(&push_key(path, field), e),
        Some(Ok(key)) => {
            if hmac && key.material.is_public() {
                err(
                    path,
                    format!(
                        "HS* algorithms with a {} public key: a public key is never an HMAC secret (J2)",
                        key.material.describe()
                    ),
                );
            }
            if public && !key.material.is_public() {
                err(
                    path,
                    "an HMAC (oct) key cannot verify RS/PS/ES/EdDSA tokens".into(),
                );
            }
        }
        None => {
            if k.file.is_some() && hmac {
                err(
                    &push_key(path, "file"),
                    "HS* algorithms need `secret` or `secret_file`; `file` holds public keys"
                        .into(),
                );
            }
        }
    }
}

fn route(path: &str, r: &Route, config: &Config, err: &mut impl FnMut(&str, String)) {
    if let Some(a) = &r.auth {
        let (key, list) = match a {
            crate::model::RouteAuth::AnyOf(l) => ("any_of", l),
            crate::model::RouteAuth::AllOf(l) => ("all_of", l),
        };
        let ap = push_key(&push_key(path, "auth"), key);
        if list.is_empty() {
            err(&ap, "at least one provider is required".into());
        }
        let mut seen = HashSet::new();
        for (i, name) in list.iter().enumerate() {
            let p = push_index(&ap, i);
            if !config.auth.contains_key(name) {
                let known: Vec<&str> = config.auth.keys().map(String::as_str).collect();
                err(
                    &p,
                    if known.is_empty() {
                        format!("auth provider `{name}` is not defined (no `auth:` providers are configured)")
                    } else {
                        format!(
                            "auth provider `{name}` is not defined (defined: {})",
                            known.join(", ")
                        )
                    },
                );
            } else if !seen.insert(name) {
                err(&p, format!("provider `{name}` is listed twice"));
            }
        }
    }
    if let Some(allow) = &r.allow {
        let ap = push_key(path, "allow");
        if r.auth.is_none() {
            for (field, set) in [
                ("groups", !allow.groups.is_empty()),
                ("scopes", !allow.scopes.is_empty()),
                ("claims", !allow.claims.is_empty()),
            ] {
                if set {
                    err(
                        &push_key(&ap, field),
                        format!("`allow.{field}` needs an authenticated route: add `auth`"),
                    );
                }
            }
        }
        for (i, g) in allow.groups.iter().enumerate() {
            if !is_valid_name(g) {
                err(
                    &push_index(&push_key(&ap, "groups"), i),
                    format!("invalid group name `{g}`"),
                );
            }
        }
        for (i, s) in allow.scopes.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) {
                err(
                    &push_index(&push_key(&ap, "scopes"), i),
                    format!("invalid scope `{s}`"),
                );
            }
        }
    }
    if let Some(c) = &r.cors {
        cors(&push_key(path, "cors"), c, err);
    }
}

/// Parses and checks a CORS origin: `*` or `scheme://host[:port]`.
pub fn check_origin(o: &str) -> Result<String, String> {
    if o == "*" {
        return Ok(o.into());
    }
    let lower = o.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err(format!(
            "origin `{o}` must be `scheme://host[:port]` (e.g. https://app.example.com) or `*`"
        ));
    };
    if !matches!(scheme, "http" | "https")
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '*', '@', ' '])
    {
        return Err(format!(
            "origin `{o}` must be `http(s)://host[:port]` without path or wildcard"
        ));
    }
    Ok(lower)
}

fn cors(path: &str, c: &CorsConfig, err: &mut impl FnMut(&str, String)) {
    let op = push_key(path, "origins");
    if c.origins.is_empty() {
        err(&op, "at least one origin is required".into());
    }
    for (i, o) in c.origins.iter().enumerate() {
        match check_origin(o) {
            Err(e) => err(&push_index(&op, i), e),
            Ok(o) if o == "*" && c.credentials => err(
                &push_index(&op, i),
                "`*` cannot be combined with `credentials: true` (browsers refuse it; list the origins)".into(),
            ),
            Ok(_) => {}
        }
    }
    for (i, m) in c.methods.iter().enumerate() {
        if Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() || m.is_empty() {
            err(
                &push_index(&push_key(path, "methods"), i),
                format!("invalid method `{m}`"),
            );
        }
    }
    for (i, h) in c.headers.iter().flatten().enumerate() {
        if let Err(e) = check_header_name(h) {
            err(&push_index(&push_key(path, "headers"), i), e);
        }
    }
    for (i, h) in c.expose_headers.iter().enumerate() {
        if let Err(e) = check_header_name(h) {
            err(&push_index(&push_key(path, "expose_headers"), i), e);
        }
    }
}
