//! Compiled authentication and authorization rules: consumers, providers (JWT, API key,
//! introspection, forward auth), route auth requirements, allow rules and CORS. Key material
//! is decoded here, at compile or JWKS-fetch time, so a request only verifies.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;

/// RSA keys shorter than this are refused at load (J10). ring refuses them anyway.
pub const MIN_RSA_BITS: usize = 2048;

/// A consumer: a named API client with groups, referred to by API keys and token claims.
pub struct Consumer {
    pub name: String,
    pub groups: Vec<String>,
    /// `x-consumer-username` value (names are validated as header-safe).
    pub header_name: HeaderValue,
    /// `x-consumer-groups` value, comma-separated; `None` without groups.
    pub header_groups: Option<HeaderValue>,
}

/// Everything auth-related in a snapshot.
#[derive(Default)]
pub struct AuthConfig {
    pub consumers: Vec<Consumer>,
    pub consumer_index: HashMap<String, usize>,
    /// SHA-256 digest of an API key -> consumer index. Keys are only ever looked up by
    /// digest, never compared as strings (K1).
    pub api_keys: HashMap<[u8; 32], usize>,
    pub providers: Vec<Provider>,
    /// Every header the gateway derives from an identity (`forward_claims`, `copy_headers`,
    /// consumer headers): client-sent copies are stripped on every route (X2).
    pub identity_headers: Vec<HeaderName>,
}

impl AuthConfig {
    pub fn provider(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }
}

pub struct Provider {
    pub name: String,
    /// Hash of the provider's config: long-lived state (JWKS, introspection cache) is kept
    /// across reloads only when this is unchanged.
    pub fingerprint: String,
    pub kind: ProviderKind,
    /// Claim -> upstream header.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub consumer_claim: Option<String>,
}

pub enum ProviderKind {
    Jwt(JwtProvider),
    ApiKey(ApiKeyProvider),
    Introspection(IntrospectionProvider),
    Forward(ForwardProvider),
}

impl ProviderKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderKind::Jwt(_) => "jwt",
            ProviderKind::ApiKey(_) => "api_key",
            ProviderKind::Introspection(_) => "introspection",
            ProviderKind::Forward(_) => "forward",
        }
    }
}

pub struct JwtProvider {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<JwsAlg>,
    pub keys: Vec<JwtKey>,
    pub jwks: Option<JwksSource>,
    pub leeway: Duration,
    pub require_exp: bool,
    pub max_token_bytes: usize,
    /// Verified tokens remembered (0: off).
    pub cache_size: usize,
}

#[derive(Clone, Debug)]
pub struct JwksSource {
    pub url: Uri,
    /// Refresh interval when the response has no usable `Cache-Control: max-age`.
    pub ttl: Duration,
    /// Floor for refreshes, and the rate limit for refetches on an unknown `kid` (J4).
    pub min_refresh: Duration,
    /// Keys are dropped this long after the last successful fetch (J11).
    pub max_stale: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
}

pub struct ApiKeyProvider {
    pub sources: Vec<KeySource>,
    pub hide_credentials: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Header(HeaderName),
    Query(String),
}

pub struct IntrospectionProvider {
    pub url: Uri,
    /// Precomputed `Basic base64(client_id:client_secret)`.
    pub authorization: Option<HeaderValue>,
    pub cache_for: Duration,
    pub timeout: Duration,
    pub max_entries: usize,
}

pub struct ForwardProvider {
    pub url: Uri,
    pub copy_headers: Vec<HeaderName>,
    pub timeout: Duration,
}

/// A route's auth requirement.
pub enum AuthRequirement {
    AnyOf(Vec<usize>),
    AllOf(Vec<usize>),
}

impl AuthRequirement {
    pub fn providers(&self) -> &[usize] {
        match self {
            AuthRequirement::AnyOf(v) | AuthRequirement::AllOf(v) => v,
        }
    }
}

#[derive(Default)]
pub struct AllowRules {
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub claims: Vec<(String, String)>,
    pub ips: Vec<IpNet>,
    pub deny_ips: Vec<IpNet>,
}

impl AllowRules {
    pub fn needs_identity(&self) -> bool {
        !self.groups.is_empty() || !self.scopes.is_empty() || !self.claims.is_empty()
    }
    pub fn has_ip_rules(&self) -> bool {
        !self.ips.is_empty() || !self.deny_ips.is_empty()
    }
}

pub struct Cors {
    /// Exact origins (`scheme://host[:port]`, lowercase). Empty with `any_origin`.
    pub origins: HashSet<String>,
    pub any_origin: bool,
    pub methods: Vec<Method>,
    pub methods_header: HeaderValue,
    /// Lowercase allowed request headers; `None` = reflect what the browser asks for.
    pub headers: Option<HashSet<String>>,
    pub headers_header: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: Option<HeaderValue>,
}

impl Cors {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.contains(&origin.to_ascii_lowercase())
    }
}

/// JWS algorithms the gateway verifies. `none` has no variant, so it cannot be configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwsAlg {
    pub const ALL: [JwsAlg; 12] = [
        JwsAlg::HS256,
        JwsAlg::HS384,
        JwsAlg::HS512,
        JwsAlg::RS256,
        JwsAlg::RS384,
        JwsAlg::RS512,
        JwsAlg::PS256,
        JwsAlg::PS384,
        JwsAlg::PS512,
        JwsAlg::ES256,
        JwsAlg::ES384,
        JwsAlg::EdDSA,
    ];

    /// Exact, case-sensitive match (RFC 7515 §4.1.1): `none`, `None`, `hs256` do not parse.
    pub fn parse(s: &str) -> Option<JwsAlg> {
        JwsAlg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlg::HS256 => "HS256",
            JwsAlg::HS384 => "HS384",
            JwsAlg::HS512 => "HS512",
            JwsAlg::RS256 => "RS256",
            JwsAlg::RS384 => "RS384",
            JwsAlg::RS512 => "RS512",
            JwsAlg::PS256 => "PS256",
            JwsAlg::PS384 => "PS384",
            JwsAlg::PS512 => "PS512",
            JwsAlg::ES256 => "ES256",
            JwsAlg::ES384 => "ES384",
            JwsAlg::EdDSA => "EdDSA",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, JwsAlg::HS256 | JwsAlg::HS384 | JwsAlg::HS512)
    }
}

/// A verification key, decoded once. The key type pins which algorithms it can verify:
/// an HMAC token is never checked against a public key (J2).
#[derive(Clone)]
pub struct JwtKey {
    pub kid: Option<String>,
    /// The JWK `alg`, when the key names one: then only that algorithm is accepted.
    pub alg: Option<JwsAlg>,
    pub material: KeyMaterial,
}

#[derive(Clone)]
pub enum KeyMaterial {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
    Hmac(Box<HmacKeys>),
}

/// HMAC keys for the three hashes, built once.
#[derive(Clone)]
pub struct HmacKeys {
    pub hs256: ring::hmac::Key,
    pub hs384: ring::hmac::Key,
    pub hs512: ring::hmac::Key,
    pub len: usize,
}

impl KeyMaterial {
    pub fn hmac(secret: &[u8]) -> KeyMaterial {
        KeyMaterial::Hmac(Box::new(HmacKeys {
            hs256: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            hs384: ring::hmac::Key::new(ring::hmac::HMAC_SHA384, secret),
            hs512: ring::hmac::Key::new(ring::hmac::HMAC_SHA512, secret),
            len: secret.len(),
        }))
    }

    pub fn is_public(&self) -> bool {
        !matches!(self, KeyMaterial::Hmac(_))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "Ed25519",
            KeyMaterial::Hmac(_) => "HMAC secret",
        }
    }

    /// Whether this key type can verify `alg`.
    pub fn supports(&self, alg: JwsAlg) -> bool {
        use JwsAlg::*;
        match self {
            KeyMaterial::Rsa { .. } => {
                matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
            }
            KeyMaterial::P256(_) => alg == ES256,
            KeyMaterial::P384(_) => alg == ES384,
            KeyMaterial::Ed25519(_) => alg == EdDSA,
            KeyMaterial::Hmac(_) => alg.is_hmac(),
        }
    }
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key material (HMAC secrets).
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("type", &self.material.describe())
            .finish()
    }
}

impl JwtKey {
    pub fn can_verify(&self, alg: JwsAlg) -> bool {
        self.material.supports(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Verifies `signature` over `message` with `alg`. False on any mismatch.
    pub fn verify(&self, alg: JwsAlg, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        if !self.can_verify(alg) {
            return false;
        }
        match &self.material {
            KeyMaterial::Hmac(k) => {
                let key = match alg {
                    JwsAlg::HS256 => &k.hs256,
                    JwsAlg::HS384 => &k.hs384,
                    _ => &k.hs512,
                };
                // Constant-time tag comparison inside ring.
                ring::hmac::verify(key, message, signature).is_ok()
            }
            KeyMaterial::Rsa { n, e } => {
                let params: &sig::RsaParameters = match alg {
                    JwsAlg::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    JwsAlg::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    JwsAlg::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    JwsAlg::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    JwsAlg::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    _ => &sig::RSA_PSS_2048_8192_SHA512,
                };
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            // JWS ECDSA signatures are fixed-width r||s; ring rejects r or s = 0 and
            // out-of-range values (CVE-2022-21449, J9).
            KeyMaterial::P256(point) => {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            KeyMaterial::P384(point) => {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            KeyMaterial::Ed25519(x) => sig::UnparsedPublicKey::new(&sig::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }

    /// Parses one JWK (RFC 7517). Private members are ignored; only the public part is kept.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<JwtKey, String> {
        let obj = jwk.as_object().ok_or("a JWK must be a JSON object")?;
        let s = |name: &str| obj.get(name).and_then(|v| v.as_str());
        let b64 = |name: &str| -> Result<Vec<u8>, String> {
            let v = s(name).ok_or_else(|| format!("JWK member `{name}` is missing"))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| format!("JWK member `{name}` is not base64url"))
        };
        if let Some(u) = s("use") {
            if u != "sig" {
                return Err(format!("JWK `use` is `{u}`, not `sig`"));
            }
        }
        let alg = match obj.get("alg") {
            None => None,
            Some(v) => {
                let a = v.as_str().ok_or("JWK `alg` must be a string")?;
                Some(JwsAlg::parse(a).ok_or_else(|| format!("JWK `alg` `{a}` is not supported"))?)
            }
        };
        let kid = match obj.get("kid") {
            None => None,
            Some(v) => Some(v.as_str().ok_or("JWK `kid` must be a string")?.to_string()),
        };
        let kty = s("kty").ok_or("JWK `kty` is missing")?;
        let material = match kty {
            "RSA" => {
                let n = strip_zeros(b64("n")?);
                let e = strip_zeros(b64("e")?);
                rsa_material(n, e)?
            }
            "EC" => {
                let crv = s("crv").ok_or("JWK `crv` is missing")?;
                let x = b64("x")?;
                let y = b64("y")?;
                let width = match crv {
                    "P-256" => 32,
                    "P-384" => 48,
                    other => return Err(format!("EC curve `{other}` is not supported")),
                };
                if x.len() != width || y.len() != width {
                    return Err(format!("JWK {crv} coordinates must be {width} bytes"));
                }
                let mut point = Vec::with_capacity(1 + 2 * width);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ec_material(crv, point)?
            }
            "OKP" => {
                let crv = s("crv").ok_or("JWK `crv` is missing")?;
                if crv != "Ed25519" {
                    return Err(format!("OKP curve `{crv}` is not supported"));
                }
                let x = b64("x")?;
                if x.len() != 32 {
                    return Err("Ed25519 `x` must be 32 bytes".into());
                }
                KeyMaterial::Ed25519(x)
            }
            "oct" => {
                let k = b64("k")?;
                hmac_material(&k)?
            }
            other => return Err(format!("JWK `kty` `{other}` is not supported")),
        };
        let key = JwtKey { kid, alg, material };
        if let Some(a) = alg {
            if !key.material.supports(a) {
                return Err(format!(
                    "JWK `alg` {} does not match its key type {} (J10)",
                    a.as_str(),
                    key.material.describe()
                ));
            }
        }
        Ok(key)
    }

    /// Parses a PEM public key: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384, Ed25519) or
    /// `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<JwtKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "PEM is not UTF-8")?;
        let (label, der) = pem_decode(text)?;
        let material = match label.as_str() {
            "PUBLIC KEY" => spki_material(&der)?,
            "RSA PUBLIC KEY" => {
                let (n, e) = rsa_public_key(&der)?;
                rsa_material(n, e)?
            }
            "CERTIFICATE" => {
                return Err(
                    "a certificate was given; use its public key (`openssl x509 -pubkey -noout`)"
                        .into(),
                )
            }
            l if l.contains("PRIVATE") => {
                return Err("a private key was given; JWT verification needs the public key".into())
            }
            l => return Err(format!("unsupported PEM block `{l}`")),
        };
        Ok(JwtKey {
            kid,
            alg: None,
            material,
        })
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let lead = v.iter().take_while(|b| **b == 0).count();
    v.drain(..lead);
    v
}

fn rsa_material(n: Vec<u8>, e: Vec<u8>) -> Result<KeyMaterial, String> {
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if n.is_empty() || bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits is too weak (at least {MIN_RSA_BITS})"
        ));
    }
    if bits > 8192 {
        return Err(format!(
            "RSA key of {bits} bits is too large (at most 8192)"
        ));
    }
    if e.is_empty() || e.len() > 4 {
        return Err("RSA exponent is invalid".into());
    }
    Ok(KeyMaterial::Rsa { n, e })
}

fn ec_material(crv: &str, point: Vec<u8>) -> Result<KeyMaterial, String> {
    // The point itself is checked by ring on every verification (an off-curve point never
    // verifies); here only the uncompressed encoding is required.
    if point.first() != Some(&4) {
        return Err("EC public key must be an uncompressed point".into());
    }
    Ok(match crv {
        "P-256" => KeyMaterial::P256(point),
        _ => KeyMaterial::P384(point),
    })
}

fn hmac_material(secret: &[u8]) -> Result<KeyMaterial, String> {
    if secret.len() < 32 {
        return Err(format!(
            "HMAC secret of {} bytes is too short (at least 32)",
            secret.len()
        ));
    }
    Ok(KeyMaterial::hmac(secret))
}

/// HMAC key from configured secret bytes (at least 32 bytes).
pub fn hmac_key(secret: &[u8], kid: Option<String>) -> Result<JwtKey, String> {
    Ok(JwtKey {
        kid,
        alg: None,
        material: hmac_material(secret)?,
    })
}

fn pem_decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let start = text.find("-----BEGIN ").ok_or("no PEM block found")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----").ok_or("malformed PEM header")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or("PEM end marker missing")?;
    let b64: String = rest[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "PEM body is not base64")?;
    Ok((label, der))
}

/// Minimal DER reader: enough for SubjectPublicKeyInfo and RSAPublicKey.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn read(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let d = self.0;
        if d.len() < 2 || d[0] != tag {
            return Err("malformed DER".into());
        }
        let (len, hdr) = match d[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81 if d.len() > 2 => (d[2] as usize, 3),
            0x82 if d.len() > 3 => (((d[2] as usize) << 8) | d[3] as usize, 4),
            _ => return Err("malformed DER length".into()),
        };
        if d.len() < hdr + len {
            return Err("truncated DER".into());
        }
        self.0 = &d[hdr + len..];
        Ok(&d[hdr..hdr + len])
    }
}

const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];

fn spki_material(der: &[u8]) -> Result<KeyMaterial, String> {
    let mut outer = Der(der);
    let spki = outer.read(0x30)?;
    let mut spki = Der(spki);
    let alg = spki.read(0x30)?;
    let bits = spki.read(0x03)?;
    let (unused, key) = bits.split_first().ok_or("empty BIT STRING")?;
    if *unused != 0 {
        return Err("malformed BIT STRING".into());
    }
    let mut alg = Der(alg);
    let oid = alg.read(0x06)?;
    if oid == OID_RSA {
        let (n, e) = rsa_public_key(key)?;
        rsa_material(n, e)
    } else if oid == OID_EC {
        let curve = alg.read(0x06)?;
        if curve == OID_P256 && key.len() == 65 {
            ec_material("P-256", key.to_vec())
        } else if curve == OID_P384 && key.len() == 97 {
            ec_material("P-384", key.to_vec())
        } else {
            Err("EC public key: only uncompressed P-256 and P-384 are supported".into())
        }
    } else if oid == OID_ED25519 && key.len() == 32 {
        Ok(KeyMaterial::Ed25519(key.to_vec()))
    } else {
        Err("unsupported public key algorithm (RSA, EC P-256/P-384, Ed25519)".into())
    }
}

fn rsa_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut outer = Der(der);
    let seq = outer.read(0x30)?;
    let mut seq = Der(seq);
    let n = strip_zeros(seq.read(0x02)?.to_vec());
    let e = strip_zeros(seq.read(0x02)?.to_vec());
    Ok((n, e))
}

/// Parses a JWKS document (`{"keys": [...]}`), or a single JWK. Keys that fail to parse are
/// skipped (J10: a weak or mismatched key never becomes usable) and reported.
pub fn parse_jwks(doc: &serde_json::Value) -> (Vec<JwtKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    let list: Vec<&serde_json::Value> = match doc.get("keys") {
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(_) => {
            errors.push("`keys` must be an array".into());
            Vec::new()
        }
        None if doc.get("kty").is_some() => vec![doc],
        None => {
            errors.push("not a JWKS document (no `keys`)".into());
            Vec::new()
        }
    };
    for (i, k) in list.into_iter().enumerate() {
        match JwtKey::from_jwk(k) {
            Ok(key) => keys.push(key),
            Err(e) => errors.push(format!("keys[{i}]: {e}")),
        }
    }
    (keys, errors)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn alg_parse_is_exact() {
        assert_eq!(JwsAlg::parse("RS256"), Some(JwsAlg::RS256));
        for bad in ["none", "None", "nOnE", "rs256", "ES512", ""] {
            assert_eq!(JwsAlg::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn j10_weak_rsa_and_mismatched_kty_rejected() {
        // 512-bit modulus.
        let n = URL_SAFE_NO_PAD.encode([0xC3u8; 64]);
        let jwk = serde_json::json!({"kty": "RSA", "n": n, "e": "AQAB"});
        assert!(JwtKey::from_jwk(&jwk)
            .expect_err("weak")
            .contains("too weak"));
        let jwk = serde_json::json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 32]), "alg": "RS256"});
        assert!(JwtKey::from_jwk(&jwk).is_err());
        let jwk = serde_json::json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 8])});
        assert!(JwtKey::from_jwk(&jwk).is_err());
    }
}
