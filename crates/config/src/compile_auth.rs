//! Compiles consumers, auth providers and the routes' `auth`/`allow`/`cors` into the runtime
//! IR. Key files are read and decoded here (never per request).

use std::collections::HashSet;
use std::path::Path;

use base64::Engine;
use http::{HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};

use gatehouse_core::auth::{
    self as ir, AllowRules, ApiKeyProvider, AuthConfig, AuthRequirement, Consumer, Cors,
    ForwardProvider, IntrospectionProvider, JwksSource, JwsAlg, JwtKey, JwtProvider, KeySource,
    Provider, ProviderKind,
};

use crate::model::{self, AuthProvider, Config};
use crate::validate_auth::{parse_digest, parse_key_location};

const CONSUMER_HEADERS: &[&str] = &["x-consumer-username", "x-consumer-groups"];

pub(crate) fn compile_auth(
    cfg: &Config,
    base_dir: &Path,
    hasher: &mut Sha256,
    err: &mut impl FnMut(String, String),
) -> AuthConfig {
    let mut out = AuthConfig::default();
    for (i, c) in cfg.consumers.iter().enumerate() {
        let header_name = HeaderValue::from_str(&c.name).unwrap_or(HeaderValue::from_static("-"));
        let header_groups = if c.groups.is_empty() {
            None
        } else {
            HeaderValue::from_str(&c.groups.join(",")).ok()
        };
        out.consumer_index.insert(c.name.clone(), i);
        out.consumers.push(Consumer {
            name: c.name.clone(),
            groups: c.groups.clone(),
            header_name,
            header_groups,
        });
        for (j, k) in c.api_keys.iter().enumerate() {
            match parse_digest(k) {
                Ok(d) => {
                    out.api_keys.insert(d, i);
                }
                Err(e) => err(format!("consumers[{i}].api_keys[{j}]"), e),
            }
        }
    }
    let mut identity: Vec<HeaderName> = CONSUMER_HEADERS
        .iter()
        .map(|h| HeaderName::from_static(h))
        .collect();
    for (name, p) in &cfg.auth {
        let base = format!("auth.{name}");
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(serde_json::to_string(p).unwrap_or_default().as_bytes());
            h.finalize()
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let mut forward_claims = Vec::new();
        let mut consumer_claim = None;
        let kind = match p {
            AuthProvider::Jwt(j) => {
                consumer_claim = j.consumer_claim.clone();
                for (claim, header) in &j.forward_claims {
                    if let Ok(h) = HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()) {
                        forward_claims.push((claim.clone(), h));
                    }
                }
                ProviderKind::Jwt(jwt(j, &base, base_dir, hasher, err))
            }
            AuthProvider::ApiKey(a) => {
                let mut sources = Vec::new();
                for loc in &a.r#in {
                    match parse_key_location(loc) {
                        Ok((true, h)) => match HeaderName::from_bytes(h.as_bytes()) {
                            Ok(h) => sources.push(KeySource::Header(h)),
                            Err(_) => err(format!("{base}.in"), "invalid header".into()),
                        },
                        Ok((false, q)) => sources.push(KeySource::Query(q)),
                        Err(e) => err(format!("{base}.in"), e),
                    }
                }
                ProviderKind::ApiKey(ApiKeyProvider {
                    sources,
                    hide_credentials: a.hide_credentials,
                })
            }
            AuthProvider::Introspection(x) => {
                consumer_claim = x.consumer_claim.clone();
                for (claim, header) in &x.forward_claims {
                    if let Ok(h) = HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()) {
                        forward_claims.push((claim.clone(), h));
                    }
                }
                let secret = match (&x.client_secret, &x.client_secret_file) {
                    (Some(s), _) => Some(s.clone()),
                    (None, Some(f)) => match read_secret_file(base_dir, f, hasher) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            err(format!("{base}.client_secret_file"), e);
                            None
                        }
                    },
                    (None, None) => None,
                };
                let authorization = x.client_id.as_ref().and_then(|id| {
                    // RFC 6749 §2.3.1: form-urlencode both parts before Basic encoding.
                    let creds = format!(
                        "{}:{}",
                        form_encode(id),
                        form_encode(secret.as_deref().unwrap_or(""))
                    );
                    HeaderValue::from_str(&format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(creds)
                    ))
                    .ok()
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                });
                ProviderKind::Introspection(IntrospectionProvider {
                    url: x.url.parse().unwrap_or_default(),
                    authorization,
                    cache_for: x.cache_for.0,
                    timeout: x.timeout.0,
                    max_entries: 10_000,
                })
            }
            AuthProvider::Forward(f) => {
                let copy_headers: Vec<HeaderName> = f
                    .copy_headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
                    .collect();
                identity.extend(copy_headers.iter().cloned());
                ProviderKind::Forward(ForwardProvider {
                    url: f.url.parse().unwrap_or_default(),
                    copy_headers,
                    timeout: f.timeout.0,
                })
            }
        };
        identity.extend(forward_claims.iter().map(|(_, h)| h.clone()));
        out.providers.push(Provider {
            name: name.clone(),
            fingerprint,
            kind,
            forward_claims,
            consumer_claim,
        });
    }
    let mut seen = HashSet::new();
    identity.retain(|h| seen.insert(h.clone()));
    out.identity_headers = identity;
    out
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_secret_file(base_dir: &Path, f: &Path, hasher: &mut Sha256) -> Result<String, String> {
    let path = base_dir.join(f);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    hasher.update(&bytes);
    let s = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

fn jwt(
    j: &model::JwtAuth,
    base: &str,
    base_dir: &Path,
    hasher: &mut Sha256,
    err: &mut impl FnMut(String, String),
) -> JwtProvider {
    let algorithms: Vec<JwsAlg> = j
        .algorithms
        .iter()
        .filter_map(|a| JwsAlg::parse(a))
        .collect();
    let mut keys = Vec::new();
    for (i, k) in j.keys.iter().enumerate() {
        let kp = format!("{base}.keys[{i}]");
        let parsed: Result<Vec<JwtKey>, String> = if let Some(pem) = &k.pem {
            JwtKey::from_pem(pem.as_bytes(), k.kid.clone()).map(|k| vec![k])
        } else if let Some(jwk) = &k.jwk {
            JwtKey::from_jwk(jwk).map(|mut key| {
                if k.kid.is_some() {
                    key.kid = k.kid.clone();
                }
                vec![key]
            })
        } else if let Some(s) = &k.secret {
            ir::hmac_key(s.as_bytes(), k.kid.clone()).map(|k| vec![k])
        } else if let Some(f) = &k.secret_file {
            read_secret_file(base_dir, f, hasher)
                .and_then(|s| ir::hmac_key(s.as_bytes(), k.kid.clone()))
                .map(|k| vec![k])
        } else if let Some(f) = &k.file {
            key_file(base_dir, f, k.kid.clone(), hasher)
        } else {
            Err("no key source".into())
        };
        match parsed {
            Ok(list) => {
                for key in &list {
                    let ok = algorithms.iter().any(|a| key.material.supports(*a));
                    if !ok {
                        err(
                            kp.clone(),
                            format!(
                                "this {} key verifies none of the configured algorithms",
                                key.material.describe()
                            ),
                        );
                    }
                }
                keys.extend(list);
            }
            Err(e) => err(kp, e),
        }
    }
    let settings = j.jwks.clone().unwrap_or_default();
    let jwks = j
        .jwks_url
        .as_ref()
        .and_then(|u| u.parse().ok())
        .map(|url| JwksSource {
            url,
            ttl: settings.ttl.0,
            min_refresh: settings.min_refresh.0,
            max_stale: settings.max_stale.0,
            timeout: settings.timeout.0,
            max_bytes: settings.max_size.0 as usize,
        });
    JwtProvider {
        issuers: j.issuer.iter().cloned().collect(),
        audiences: j.audiences.clone(),
        algorithms,
        keys,
        jwks,
        leeway: j.leeway.0,
        require_exp: j.require_exp,
        max_token_bytes: j.max_token_size.0 as usize,
        cache_size: j.cache_size,
    }
}

/// A key file: PEM public key, or JSON (one JWK or a JWKS).
fn key_file(
    base_dir: &Path,
    f: &Path,
    kid: Option<String>,
    hasher: &mut Sha256,
) -> Result<Vec<JwtKey>, String> {
    let path = base_dir.join(f);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    hasher.update(&bytes);
    let trimmed = bytes.iter().position(|b| !b.is_ascii_whitespace());
    if trimmed.map(|i| bytes[i]) == Some(b'{') {
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
        let (mut keys, errors) = ir::parse_jwks(&doc);
        if let Some(e) = errors.first() {
            return Err(format!("{}: {e}", path.display()));
        }
        if keys.is_empty() {
            return Err(format!("{}: no keys", path.display()));
        }
        if kid.is_some() && keys.len() == 1 {
            keys[0].kid = kid;
        }
        Ok(keys)
    } else {
        JwtKey::from_pem(&bytes, kid)
            .map(|k| vec![k])
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

pub(crate) fn route_auth(
    r: &model::Route,
    base: &str,
    auth: &AuthConfig,
    err: &mut impl FnMut(String, String),
) -> (Option<AuthRequirement>, AllowRules, Option<Cors>) {
    let requirement = r.auth.as_ref().map(|a| {
        let (names, any) = match a {
            model::RouteAuth::AnyOf(l) => (l, true),
            model::RouteAuth::AllOf(l) => (l, false),
        };
        let mut idx = Vec::new();
        for (i, n) in names.iter().enumerate() {
            match auth.provider(n) {
                Some(p) => idx.push(p),
                None => err(
                    format!("{base}.auth"),
                    format!("auth provider `{n}` (#{i}) is not defined"),
                ),
            }
        }
        if any {
            AuthRequirement::AnyOf(idx)
        } else {
            AuthRequirement::AllOf(idx)
        }
    });
    let allow = r
        .allow
        .as_ref()
        .map(|a| AllowRules {
            groups: a.groups.clone(),
            scopes: a.scopes.clone(),
            claims: a
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ips: a.ips.iter().map(|c| c.0).collect(),
            deny_ips: a.deny_ips.iter().map(|c| c.0).collect(),
        })
        .unwrap_or_default();
    let cors = r.cors.as_ref().map(|c| {
        let mut methods: Vec<Method> = c
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .collect();
        if methods.is_empty() {
            methods = r
                .r#match
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect();
        }
        if methods.is_empty() {
            methods = vec![Method::GET, Method::HEAD, Method::POST];
        }
        let join = |v: &[String]| HeaderValue::from_str(&v.join(", ")).ok();
        let any_origin = c.origins.iter().any(|o| o == "*");
        let origins = c
            .origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| o.to_ascii_lowercase())
            .collect();
        let headers = c
            .headers
            .as_ref()
            .map(|h| h.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>());
        Cors {
            origins,
            any_origin,
            methods_header: HeaderValue::from_str(
                &methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .unwrap_or(HeaderValue::from_static("GET")),
            methods,
            headers_header: headers.as_ref().and_then(|h| join(h)),
            headers: headers.map(|h| h.into_iter().collect()),
            expose_headers: if c.expose_headers.is_empty() {
                None
            } else {
                join(&c.expose_headers)
            },
            credentials: c.credentials,
            max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
        }
    });
    (requirement, allow, cors)
}
