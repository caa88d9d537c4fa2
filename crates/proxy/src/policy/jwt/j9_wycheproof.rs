//! J9: the Wycheproof ECDSA and RSA signature-verification vectors, run through the JWT
//! verifier's own path: keys are built by `JwtKey::from_jwk` (the JWKS/config loader) and
//! each signature is checked by `Parsed::verify_with` → `JwtKey::verify` (ring), exactly as
//! a token's signature would be, with the vector's message as the signing input.
//!
//! Every `Invalid` vector must be rejected and every `Valid` one accepted; `Acceptable`
//! ones may go either way and are only counted. Groups whose parameters the JWT verifier
//! cannot express (an RSA key below `MIN_RSA_BITS`, a PSS salt length or MGF hash other than
//! the JWS one) are skipped and counted, never silently dropped: each test asserts how many
//! vectors it actually ran.

use super::*;
use gatehouse_core::auth::{JwtKey, MIN_RSA_BITS};
use wycheproof::{HashFunction, Mgf, TestResult};

#[derive(Default, Debug)]
struct Counts {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    /// Of the `Acceptable` vectors, how many the verifier accepted.
    acceptable_accepted: usize,
    /// Vectors in groups the JWT verifier cannot express (see the module docs).
    skipped: usize,
    failures: Vec<String>,
}

impl Counts {
    /// Runs one vector through `verify_with`, as the verifier does for a parsed token.
    fn check(
        &mut self,
        key: &JwtKey,
        alg: JwsAlg,
        msg: &[u8],
        sig: &[u8],
        r: TestResult,
        id: String,
    ) {
        let parsed = Parsed {
            alg,
            kid: None,
            signing_input: msg,
            payload_b64: "",
            signature: sig.to_vec(),
        };
        let accepted = parsed.verify_with(std::slice::from_ref(key)).is_ok();
        match r {
            TestResult::Valid => {
                self.valid += 1;
                if !accepted {
                    self.failures
                        .push(format!("{id}: valid signature rejected"));
                }
            }
            TestResult::Invalid => {
                self.invalid += 1;
                if accepted {
                    self.failures
                        .push(format!("{id}: INVALID signature accepted"));
                }
            }
            TestResult::Acceptable => {
                self.acceptable += 1;
                self.acceptable_accepted += usize::from(accepted);
            }
        }
    }

    fn finish(self, name: &str) -> Counts {
        eprintln!(
            "{name}: valid={} invalid={} acceptable={} (accepted {}) skipped={}",
            self.valid, self.invalid, self.acceptable, self.acceptable_accepted, self.skipped
        );
        assert!(
            self.failures.is_empty(),
            "{name}: {} vector(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert!(self.valid > 0 && self.invalid > 0, "{name}: no vectors ran");
        self
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// ECDSA from the IEEE P1363 test sets: signatures are fixed-width r||s, the JWS encoding
/// (RFC 7518 §3.4), so they are fed to the verifier unchanged.
fn ecdsa(
    set: wycheproof::ecdsa::TestName,
    crv: &str,
    width: usize,
    hash: HashFunction,
    alg: JwsAlg,
) -> Counts {
    use wycheproof::ecdsa::{TestGroupTypeId, TestSet};
    let set = TestSet::load(set).expect("wycheproof data set");
    let mut c = Counts::default();
    for g in &set.test_groups {
        assert_eq!(
            g.test_type,
            TestGroupTypeId::EcdsaP1363,
            "P1363 (raw r||s) groups only"
        );
        assert_eq!(g.hash, hash);
        // The uncompressed SEC1 point 04||x||y, given to the loader as JWK x and y.
        let point: &[u8] = &g.key.key;
        assert_eq!(point.len(), 1 + 2 * width, "uncompressed {crv} point");
        let key = JwtKey::from_jwk(&serde_json::json!({
            "kty": "EC",
            "crv": crv,
            "x": b64(&point[1..=width]),
            "y": b64(&point[1 + width..]),
        }))
        .expect("Wycheproof ECDSA key loads as a JWK");
        for t in &g.tests {
            let id = format!("tcId {} ({})", t.tc_id, t.comment);
            c.check(&key, alg, &t.msg, &t.sig, t.result, id);
        }
    }
    c
}

/// An RSA key as the JWKS loader builds it; `None` (with the reason) when the loader
/// refuses it by policy (fewer than `MIN_RSA_BITS` bits).
fn rsa_key(n: &[u8], e: &[u8]) -> Option<JwtKey> {
    match JwtKey::from_jwk(&serde_json::json!({"kty": "RSA", "n": b64(n), "e": b64(e)})) {
        Ok(k) => Some(k),
        Err(why) => {
            assert!(
                why.contains("too weak"),
                "RSA key refused for another reason: {why}"
            );
            None
        }
    }
}

#[test]
fn j9_wycheproof_ecdsa_p256() {
    let c = ecdsa(
        wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363,
        "P-256",
        32,
        HashFunction::Sha2_256,
        JwsAlg::ES256,
    )
    .finish("ES256 (P-256/SHA-256, P1363)");
    assert_eq!(c.skipped, 0);
}

#[test]
fn j9_wycheproof_ecdsa_p384() {
    let c = ecdsa(
        wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363,
        "P-384",
        48,
        HashFunction::Sha2_384,
        JwsAlg::ES384,
    )
    .finish("ES384 (P-384/SHA-384, P1363)");
    assert_eq!(c.skipped, 0);
}

#[test]
fn j9_wycheproof_rsa_pkcs1() {
    use wycheproof::rsa_pkcs1_verify::{TestName as N, TestSet};
    let sets = [
        (N::Rsa2048Sha256, HashFunction::Sha2_256, JwsAlg::RS256),
        (N::Rsa2048Sha384, HashFunction::Sha2_384, JwsAlg::RS384),
        (N::Rsa2048Sha512, HashFunction::Sha2_512, JwsAlg::RS512),
        (N::Rsa3072Sha256, HashFunction::Sha2_256, JwsAlg::RS256),
        (N::Rsa3072Sha384, HashFunction::Sha2_384, JwsAlg::RS384),
        (N::Rsa3072Sha512, HashFunction::Sha2_512, JwsAlg::RS512),
        (N::Rsa4096Sha256, HashFunction::Sha2_256, JwsAlg::RS256),
        (N::Rsa4096Sha384, HashFunction::Sha2_384, JwsAlg::RS384),
        (N::Rsa4096Sha512, HashFunction::Sha2_512, JwsAlg::RS512),
        (N::Rsa8192Sha256, HashFunction::Sha2_256, JwsAlg::RS256),
        (N::Rsa8192Sha384, HashFunction::Sha2_384, JwsAlg::RS384),
        (N::Rsa8192Sha512, HashFunction::Sha2_512, JwsAlg::RS512),
    ];
    let mut c = Counts::default();
    for (name, hash, alg) in sets {
        let set = TestSet::load(name).expect("wycheproof data set");
        for g in &set.test_groups {
            assert_eq!(g.hash, hash, "{name:?}");
            let Some(key) = rsa_key(&g.key.n, &g.key.e) else {
                assert!(g.key_size < MIN_RSA_BITS);
                c.skipped += g.tests.len();
                continue;
            };
            for t in &g.tests {
                let id = format!("{name:?} tcId {} ({})", t.tc_id, t.comment);
                c.check(&key, alg, &t.msg, &t.sig, t.result, id);
            }
        }
    }
    c.finish("RS256/384/512 (PKCS#1 v1.5, 2048–8192 bits)");
}

#[test]
fn j9_wycheproof_rsa_pss() {
    use wycheproof::rsa_pss_verify::{TestName as N, TestSet};
    // Only the JWS parameters (RFC 7518 §3.5): MGF1 with the message hash, salt length =
    // hash length. Other Wycheproof PSS sets (salt 0/20/28, MGF1-SHA-1, SHAKE, SHA-512 with
    // salt 32) describe signatures a JWS verifier must not accept as PSxxx, so they are not
    // loaded at all; `*_params` sets are the same vectors with an explicit-parameter key.
    let sets = [
        (
            N::RsaPss2048Sha256Mgf1SaltLen32,
            HashFunction::Sha2_256,
            32,
            JwsAlg::PS256,
        ),
        (
            N::RsaPss3072Sha256Mgf1SaltLen32,
            HashFunction::Sha2_256,
            32,
            JwsAlg::PS256,
        ),
        (
            N::RsaPss4096Sha256Mgf1SaltLen32,
            HashFunction::Sha2_256,
            32,
            JwsAlg::PS256,
        ),
        (
            N::RsaPss2048Sha384Mgf1SaltLen48,
            HashFunction::Sha2_384,
            48,
            JwsAlg::PS384,
        ),
        (
            N::RsaPss4096Sha384Mgf1SaltLen48,
            HashFunction::Sha2_384,
            48,
            JwsAlg::PS384,
        ),
        (
            N::RsaPss4096Sha512Mgf1SaltLen64,
            HashFunction::Sha2_512,
            64,
            JwsAlg::PS512,
        ),
    ];
    let mut c = Counts::default();
    for (name, hash, salt, alg) in sets {
        let set = TestSet::load(name).expect("wycheproof data set");
        for g in &set.test_groups {
            let jws_params = g.hash == hash
                && g.mgf == Mgf::Mgf1
                && g.mgf_hash == Some(hash)
                && g.salt_size == salt;
            let key = if jws_params {
                rsa_key(&g.key.n, &g.key.e)
            } else {
                None
            };
            let Some(key) = key else {
                c.skipped += g.tests.len();
                continue;
            };
            for t in &g.tests {
                let id = format!("{name:?} tcId {} ({})", t.tc_id, t.comment);
                c.check(&key, alg, &t.msg, &t.sig, t.result, id);
            }
        }
    }
    c.finish("PS256/384/512 (RSASSA-PSS, MGF1 same hash, salt = hash length)");
}
