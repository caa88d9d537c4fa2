//! JWS compact-serialization verification (RFC 7515 / 7519) on `ring`.
//!
//! Why not `jsonwebtoken`: its 10.x/11.x releases dropped the `ring` backend (only
//! `aws_lc_rs`, which needs cmake and aws-lc-sys, or `rust_crypto`, which adds the `rsa`
//! crate flagged by RUSTSEC-2023-0071 and ~20 crates); 9.x uses ring but carries
//! CVE-2026-25537 (mistyped `exp`/`nbf` skipped) and reads the wall clock itself, so neither
//! a frozen clock (J6, J12) nor `iat` sanity can be had. The token format is small; the
//! cryptography is ring's, the same library rustls uses here.
//!
//! Order of checks: size, shape (exactly three segments, strict base64url), header (one
//! `alg`, no `crit`), `alg` in the provider's pinned list, key selection by `kid` and key
//! type, signature, then claims. `jku`, `x5u`, `jwk` and `x5c` in the header are ignored:
//! keys only ever come from configuration or the configured JWKS URL (J5).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use gatehouse_core::auth::{JwsAlg, JwtKey, JwtProvider};

pub type Claims = serde_json::Map<String, serde_json::Value>;

/// Why a token was refused. Never shown to clients (they get `invalid_token`); logged at
/// debug level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    TooLarge,
    Malformed,
    Algorithm,
    /// No key with this `kid` (the caller may refetch the JWKS once).
    UnknownKid,
    Signature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingExp,
    Issuer,
    Audience,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A token split and its header checked, before any key is chosen.
pub struct Parsed<'a> {
    pub alg: JwsAlg,
    pub kid: Option<String>,
    signing_input: &'a [u8],
    payload_b64: &'a str,
    signature: Vec<u8>,
}

/// The longest `kid` considered; longer ones are refused before any lookup (J4).
pub const MAX_KID: usize = 256;

pub fn parse<'a>(token: &'a str, p: &JwtProvider) -> Result<Parsed<'a>, JwtError> {
    if token.len() > p.max_token_bytes {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(payload), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // JWE (5 segments), 4 segments, or not a JWS at all (J8).
        return Err(JwtError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
    // serde rejects a duplicate `alg` member in a struct (J8).
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed)?;
    if header.crit.is_some() {
        // No extension is understood, so any critical one must fail (RFC 7515 §4.1.11).
        return Err(JwtError::Malformed);
    }
    // Exact, case-sensitive names; `none` has no variant (J1); pinned list (J3).
    let alg = JwsAlg::parse(&header.alg).ok_or(JwtError::Algorithm)?;
    if !p.algorithms.contains(&alg) {
        return Err(JwtError::Algorithm);
    }
    if header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID) {
        return Err(JwtError::UnknownKid);
    }
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    if signature.is_empty() {
        return Err(JwtError::Signature);
    }
    let signing_input = &token.as_bytes()[..h.len() + 1 + payload.len()];
    Ok(Parsed {
        alg,
        kid: header.kid,
        signing_input,
        payload_b64: payload,
        signature,
    })
}

impl Parsed<'_> {
    /// Tries the keys that match the token's `kid` (or all keys, when it has none) and its
    /// algorithm. `Err(UnknownKid)` when the `kid` matches no key at all.
    pub fn verify_with(&self, keys: &[JwtKey]) -> Result<(), JwtError> {
        let mut candidates = 0;
        for k in keys {
            if let Some(kid) = &self.kid {
                if k.kid.as_deref() != Some(kid.as_str()) {
                    continue;
                }
            }
            candidates += 1;
            if k.can_verify(self.alg) && k.verify(self.alg, self.signing_input, &self.signature) {
                return Ok(());
            }
        }
        if candidates == 0 && self.kid.is_some() {
            Err(JwtError::UnknownKid)
        } else {
            Err(JwtError::Signature)
        }
    }

    /// Decodes and validates the claims at time `now` (seconds since the epoch).
    pub fn claims(&self, p: &JwtProvider, now: u64) -> Result<Claims, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(self.payload_b64)
            .map_err(|_| JwtError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
        validate_claims(&claims, p, now)?;
        Ok(claims)
    }
}

/// A NumericDate: a JSON number. Any other type is an error, never "absent"
/// (the CVE-2026-25537 class).
fn numeric(claims: &Claims, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(JwtError::Malformed),
        },
        Some(_) => Err(JwtError::Malformed),
    }
}

pub fn validate_claims(claims: &Claims, p: &JwtProvider, now: u64) -> Result<(), JwtError> {
    let now = now as f64;
    let leeway = p.leeway.as_secs_f64();
    match numeric(claims, "exp")? {
        Some(exp) if now > exp + leeway => return Err(JwtError::Expired),
        None if p.require_exp => return Err(JwtError::MissingExp),
        _ => {}
    }
    if let Some(nbf) = numeric(claims, "nbf")? {
        if now + leeway < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = numeric(claims, "iat")? {
        if now + leeway < iat {
            return Err(JwtError::IssuedInFuture);
        }
    }
    if !p.issuers.is_empty() {
        match claims.get("iss").and_then(|v| v.as_str()) {
            Some(iss) if p.issuers.iter().any(|i| i == iss) => {}
            _ => return Err(JwtError::Issuer),
        }
    }
    if !p.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => p.audiences.iter().any(|x| x == a),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str())
                .any(|a| p.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err(JwtError::Audience);
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Full verification against a fixed key set and clock (tests, benchmarks, static keys).
pub fn verify(token: &str, p: &JwtProvider, keys: &[JwtKey], now: u64) -> Result<Claims, JwtError> {
    let parsed = parse(token, p)?;
    parsed.verify_with(keys)?;
    parsed.claims(p, now)
}

/// Scopes from `scope` (space-separated string) or `scp` (array or string).
pub fn scopes(claims: &Claims) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(serde_json::Value::String(s)) => {
                out.extend(s.split_whitespace().map(str::to_string))
            }
            Some(serde_json::Value::Array(a)) => {
                out.extend(a.iter().filter_map(|v| v.as_str()).map(str::to_string))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod j9_wycheproof;

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::auth::{hmac_key, JwtKey};
    use std::time::Duration;

    const A_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    /// RFC 7515 A.1 (HS256).
    const A1: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const A1_K: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    /// RFC 7515 A.2 (RS256).
    const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    /// RFC 7515 A.3 (ES256).
    const A3_SIG: &str =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    /// RFC 7515 A.4 (ES512) header + payload: P-521 is not supported, so it must fail.
    const A4: &str = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
    /// RFC 7515 A.5 (unsecured).
    const A5: &str = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    /// RFC 7520 §4.4 (HS256, "hobbiton" key); the payload is text, so only the signature is checked.
    const C44: &str = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";
    const C44_K: &str = "hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg";
    /// `exp` of the A.x payload: 2011-03-22.
    const A_EXP: u64 = 1_300_819_380;

    fn provider(algs: &[JwsAlg]) -> JwtProvider {
        JwtProvider {
            issuers: vec![],
            audiences: vec![],
            algorithms: algs.to_vec(),
            keys: vec![],
            jwks: None,
            leeway: Duration::from_secs(30),
            require_exp: true,
            max_token_bytes: 8192,
            cache_size: 0,
        }
    }

    fn jwk(v: serde_json::Value) -> JwtKey {
        JwtKey::from_jwk(&v).expect("jwk")
    }

    #[test]
    fn j12_rfc7515_vectors() {
        // A.1: valid signature, but expired in 2011: rejected under the real clock, accepted
        // only with a frozen clock.
        let p = provider(&[JwsAlg::HS256]);
        let k = vec![jwk(serde_json::json!({"kty": "oct", "k": A1_K}))];
        assert_eq!(verify(A1, &p, &k, now_secs()), Err(JwtError::Expired));
        let claims = verify(A1, &p, &k, A_EXP - 10).expect("A.1 with a frozen clock");
        assert_eq!(claims["iss"], "joe");
        assert_eq!(claims["http://example.com/is_root"], true);

        let a2 = format!("eyJhbGciOiJSUzI1NiJ9.{A_PAYLOAD}.{A2_SIG}");
        let p = provider(&[JwsAlg::RS256]);
        let k = vec![jwk(
            serde_json::json!({"kty": "RSA", "n": A2_N, "e": "AQAB"}),
        )];
        assert_eq!(verify(&a2, &p, &k, now_secs()), Err(JwtError::Expired));
        assert!(verify(&a2, &p, &k, A_EXP).is_ok());

        let a3 = format!("eyJhbGciOiJFUzI1NiJ9.{A_PAYLOAD}.{A3_SIG}");
        let p = provider(&[JwsAlg::ES256]);
        let k = vec![jwk(
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}),
        )];
        assert_eq!(verify(&a3, &p, &k, now_secs()), Err(JwtError::Expired));
        assert!(verify(&a3, &p, &k, A_EXP).is_ok());

        // A.4 is ES512 (P-521), which is not supported: refused, never "verified".
        let p = provider(&JwsAlg::ALL);
        assert_eq!(verify(A4, &p, &k, A_EXP).err(), Some(JwtError::Algorithm));
        // A.5 (alg none) is always rejected.
        assert_eq!(verify(A5, &p, &k, A_EXP).err(), Some(JwtError::Algorithm));
    }

    #[test]
    fn j12_rfc7520_4_4_hs256_signature() {
        let p = provider(&[JwsAlg::HS256]);
        let k = vec![jwk(serde_json::json!({
            "kty": "oct", "kid": "018c0ae5-4d9b-471b-bfd6-eef314bc7037", "use": "sig", "alg": "HS256", "k": C44_K
        }))];
        let parsed = parse(C44, &p).expect("parse");
        assert_eq!(parsed.verify_with(&k), Ok(()));
        // Flip one bit of the signature.
        let bad = C44.replace(".s0h6", ".s0h7");
        assert_eq!(
            parse(&bad, &p).expect("parse").verify_with(&k),
            Err(JwtError::Signature)
        );
        // A non-canonical last character (non-zero trailing bits) is malformed base64.
        let mut odd = C44.to_string();
        odd.pop();
        odd.push('1');
        assert_eq!(parse(&odd, &p).err(), Some(JwtError::Malformed));
    }

    /// RFC 7520 §4.1 (RS256, the "bilbo.baggins@hobbiton.example" key of §3.3): the
    /// compact serialization of §4.1.3 and the public members of the JWK.
    const C41: &str = concat!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
        ".SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4",
        ".MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg",
    );
    const C41_N: &str = concat!(
        "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqV",
        "wGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde",
        "3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5g",
        "HdrNP5zw",
    );

    #[test]
    fn j12_rfc7520_4_1_rs256_signature() {
        let p = provider(&[JwsAlg::RS256]);
        let k = vec![jwk(serde_json::json!({
            "kty": "RSA", "kid": "bilbo.baggins@hobbiton.example", "use": "sig", "n": C41_N, "e": "AQAB"
        }))];
        // The payload is text, not claims: only the signature is checked.
        let parsed = parse(C41, &p).expect("parse");
        assert_eq!(parsed.verify_with(&k), Ok(()));
        // One bit flipped in the signature, or in the payload: refused.
        let bad_sig = C41.replace(".MRjd", ".MRje");
        assert_eq!(
            parse(&bad_sig, &p).expect("parse").verify_with(&k),
            Err(JwtError::Signature)
        );
        let bad_payload = C41.replace(".SXTi", ".SXTj");
        assert_eq!(
            parse(&bad_payload, &p).expect("parse").verify_with(&k),
            Err(JwtError::Signature)
        );
        // The same token under another kid finds no key.
        let other = vec![jwk(serde_json::json!({
            "kty": "RSA", "kid": "someone-else", "n": C41_N, "e": "AQAB"
        }))];
        assert!(parse(C41, &p).expect("parse").verify_with(&other).is_err());
        // RS256 pinned: the vector is refused by a provider allowing only PS256.
        assert_eq!(
            parse(C41, &provider(&[JwsAlg::PS256])).err(),
            Some(JwtError::Algorithm)
        );
    }

    #[test]
    fn j1_alg_none_rejected() {
        let p = provider(&JwsAlg::ALL);
        let k = vec![hmac_key(&[1u8; 32], None).expect("key")];
        for alg in ["none", "None", "nOnE", "NONE"] {
            let h = URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\"}}"));
            let c = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now_secs() + 60));
            for sig in ["", "c2ln"] {
                let t = format!("{h}.{c}.{sig}");
                assert!(verify(&t, &p, &k, now_secs()).is_err(), "{t}");
            }
        }
    }

    #[test]
    fn j9_ecdsa_zero_signature_rejected() {
        let p = provider(&[JwsAlg::ES256]);
        let k = vec![jwk(
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}),
        )];
        let zero = URL_SAFE_NO_PAD.encode([0u8; 64]);
        let t = format!("eyJhbGciOiJFUzI1NiJ9.{A_PAYLOAD}.{zero}");
        assert_eq!(verify(&t, &p, &k, A_EXP), Err(JwtError::Signature));
        // r = s = n (the group order) is also invalid.
        let n = hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        let mut sig = n.clone();
        sig.extend_from_slice(&n);
        let t = format!(
            "eyJhbGciOiJFUzI1NiJ9.{A_PAYLOAD}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        );
        assert_eq!(verify(&t, &p, &k, A_EXP), Err(JwtError::Signature));
    }

    fn hex32(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn j8_integrity_and_shape() {
        let p = provider(&[JwsAlg::HS256]);
        let k = vec![jwk(serde_json::json!({"kty": "oct", "k": A1_K}))];
        let now = A_EXP - 10;
        // Payload bit flip.
        let flipped = A1.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Uj", 1);
        assert!(verify(&flipped, &p, &k, now).is_err());
        // Truncated signature.
        assert!(verify(&A1[..A1.len() - 4], &p, &k, now).is_err());
        // 4 and 5 segments (JWE).
        assert_eq!(
            verify(&format!("{A1}.x"), &p, &k, now),
            Err(JwtError::Malformed)
        );
        assert_eq!(
            verify(&format!("{A1}.x.y"), &p, &k, now),
            Err(JwtError::Malformed)
        );
        // Padded / non-url-safe base64.
        assert!(verify(&format!("{A1}="), &p, &k, now).is_err());
        let std_b64 = A1.replace('_', "/");
        assert!(verify(&std_b64, &p, &k, now).is_err());
        // Duplicate alg members.
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","alg":"none"}"#);
        let t = format!("{h}.{A_PAYLOAD}.AAAA");
        assert_eq!(verify(&t, &p, &k, now), Err(JwtError::Malformed));
        // 64 KiB token.
        let big = "a".repeat(64 * 1024);
        assert_eq!(verify(&big, &p, &k, now), Err(JwtError::TooLarge));
        // `crit` is refused.
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","crit":["exp"]}"#);
        assert_eq!(
            verify(&format!("{h}.{A_PAYLOAD}.AAAA"), &p, &k, now),
            Err(JwtError::Malformed)
        );
    }

    fn hs_token(secret: &[u8], claims: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{c}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let sig = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn j6_time_claims() {
        let secret = [9u8; 32];
        let k = vec![hmac_key(&secret, None).expect("key")];
        let p = provider(&[JwsAlg::HS256]);
        let now = 1_700_000_000u64;
        let t = |c| hs_token(&secret, c);
        use serde_json::json;
        assert_eq!(
            verify(&t(json!({"exp": now - 31})), &p, &k, now),
            Err(JwtError::Expired)
        );
        assert!(verify(&t(json!({"exp": now - 29})), &p, &k, now).is_ok());
        assert_eq!(
            verify(&t(json!({"sub": "x"})), &p, &k, now),
            Err(JwtError::MissingExp)
        );
        assert_eq!(
            verify(&t(json!({"exp": now + 60, "nbf": now + 120})), &p, &k, now),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            verify(&t(json!({"exp": now + 60, "iat": now + 600})), &p, &k, now),
            Err(JwtError::IssuedInFuture)
        );
        // CVE-2026-25537 class: a mistyped claim is an error, not "absent".
        assert_eq!(
            verify(
                &t(json!({"exp": now + 60, "nbf": "99999999999"})),
                &p,
                &k,
                now
            ),
            Err(JwtError::Malformed)
        );
        assert_eq!(
            verify(&t(json!({"exp": "never"})), &p, &k, now),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn j7_issuer_and_audience() {
        let secret = [9u8; 32];
        let k = vec![hmac_key(&secret, None).expect("key")];
        let mut p = provider(&[JwsAlg::HS256]);
        p.issuers = vec!["https://idp/".into()];
        p.audiences = vec!["orders".into()];
        let now = 1_700_000_000u64;
        use serde_json::json;
        let t = |c| hs_token(&secret, c);
        let exp = now + 60;
        assert!(verify(
            &t(json!({"exp": exp, "iss": "https://idp/", "aud": "orders"})),
            &p,
            &k,
            now
        )
        .is_ok());
        assert!(verify(
            &t(json!({"exp": exp, "iss": "https://idp/", "aud": ["x", "orders"]})),
            &p,
            &k,
            now
        )
        .is_ok());
        assert_eq!(
            verify(
                &t(json!({"exp": exp, "iss": "https://idp/", "aud": "other"})),
                &p,
                &k,
                now
            ),
            Err(JwtError::Audience)
        );
        assert_eq!(
            verify(&t(json!({"exp": exp, "iss": "https://idp/"})), &p, &k, now),
            Err(JwtError::Audience)
        );
        assert_eq!(
            verify(
                &t(json!({"exp": exp, "iss": "https://evil/", "aud": "orders"})),
                &p,
                &k,
                now
            ),
            Err(JwtError::Issuer)
        );
        assert_eq!(
            verify(&t(json!({"exp": exp, "aud": "orders"})), &p, &k, now),
            Err(JwtError::Issuer)
        );
    }

    #[test]
    fn j2_hs_rs_confusion_rejected() {
        // An RS256 key is configured; the attacker signs HS256 with the RSA public key bytes.
        let n = A2_N;
        let key = jwk(serde_json::json!({"kty": "RSA", "n": n, "e": "AQAB"}));
        let p = provider(&[JwsAlg::RS256]);
        let pub_bytes = format!("{n}AQAB");
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let c = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now_secs() + 60));
        let input = format!("{h}.{c}");
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pub_bytes.as_bytes()),
            input.as_bytes(),
        );
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(
            verify(&t, &p, std::slice::from_ref(&key), now_secs()),
            Err(JwtError::Algorithm)
        );
        // Even if HS256 were allowed, an RSA key never verifies an HMAC token.
        let p = provider(&[JwsAlg::RS256, JwsAlg::HS256]);
        assert_eq!(verify(&t, &p, &[key], now_secs()), Err(JwtError::Signature));
    }

    #[test]
    fn j3_algorithm_outside_allow_list() {
        let p = provider(&[JwsAlg::RS256]);
        for alg in ["RS512", "PS256", "ES256", "EdDSA"] {
            let h = URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\"}}"));
            let t = format!("{h}.{A_PAYLOAD}.AAAA");
            assert_eq!(parse(&t, &p).err(), Some(JwtError::Algorithm));
        }
    }
}
