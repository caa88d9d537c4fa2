//! Token signing for tests (ring), fixture keys, and a scriptable in-test HTTP service
//! (JWKS endpoint, introspection endpoint, forward-auth service) built on hyper.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{self, KeyPair};

/// A 2048-bit RSA test key (PKCS#8), generated for this repository's tests only.
pub const RSA_PRIVATE_PEM: &str = include_str!("fixtures/rsa2048.pk8.pem");
/// Its public key (SPKI PEM).
pub const RSA_PUBLIC_PEM: &str = include_str!("fixtures/rsa2048.pub.pem");

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("fixture PEM")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `header.payload` with the given JSON values.
pub fn signing_input(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

pub fn hs256(secret: &[u8], header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let input = signing_input(header, claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Signs `input` bytes with HMAC-SHA256 (J2: the attacker's token).
pub fn hmac256_raw(secret: &[u8], input: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    b64(ring::hmac::sign(&key, input.as_bytes()).as_ref())
}

/// RS256/PS256... with the fixture RSA key.
pub fn rsa(alg: &str, header_extra: serde_json::Value, claims: &serde_json::Value) -> String {
    let mut header = serde_json::json!({"alg": alg, "typ": "JWT"});
    merge(&mut header, header_extra);
    let input = signing_input(&header, claims);
    let pair = signature::RsaKeyPair::from_pkcs8(&pem_der(RSA_PRIVATE_PEM)).expect("rsa key");
    let enc: &'static dyn signature::RsaEncoding = match alg {
        "RS256" => &signature::RSA_PKCS1_SHA256,
        "RS384" => &signature::RSA_PKCS1_SHA384,
        "RS512" => &signature::RSA_PKCS1_SHA512,
        "PS256" => &signature::RSA_PSS_SHA256,
        "PS384" => &signature::RSA_PSS_SHA384,
        _ => &signature::RSA_PSS_SHA512,
    };
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        enc,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", b64(&sig))
}

/// The fixture RSA key as a public JWK.
pub fn rsa_jwk(kid: &str) -> serde_json::Value {
    let pair = signature::RsaKeyPair::from_pkcs8(&pem_der(RSA_PRIVATE_PEM)).expect("rsa key");
    let c = pair.public().into();
    let c: signature::RsaPublicKeyComponents<Vec<u8>> = c;
    serde_json::json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e), "use": "sig"})
}

/// An EC P-256 or Ed25519 signing key.
pub struct TestKey {
    pkcs8: Vec<u8>,
    pub alg: &'static str,
    pub kid: String,
}

impl TestKey {
    pub fn es256(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("keygen");
        TestKey {
            pkcs8: pkcs8.as_ref().to_vec(),
            alg: "ES256",
            kid: kid.into(),
        }
    }

    pub fn ed25519(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        TestKey {
            pkcs8: pkcs8.as_ref().to_vec(),
            alg: "EdDSA",
            kid: kid.into(),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> serde_json::Value {
        let rng = ring::rand::SystemRandom::new();
        if self.alg == "ES256" {
            let pair = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &self.pkcs8,
                &rng,
            )
            .expect("key");
            let p = pair.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
        } else {
            let pair = signature::Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("key");
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(pair.public_key().as_ref())})
        }
    }

    /// A token with header `{alg, kid}` and `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_with_header(
            serde_json::json!({"alg": self.alg, "kid": self.kid}),
            claims,
        )
    }

    pub fn sign_with_header(
        &self,
        header: serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        let input = signing_input(&header, claims);
        let rng = ring::rand::SystemRandom::new();
        let sig = if self.alg == "ES256" {
            let pair = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &self.pkcs8,
                &rng,
            )
            .expect("key");
            pair.sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec()
        } else {
            let pair = signature::Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("key");
            pair.sign(input.as_bytes()).as_ref().to_vec()
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), extra) {
        a.extend(b);
    }
}

/// What the scripted service answers: status, headers, body.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }
}

/// A request the service received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A scriptable hyper HTTP/1.1 service on 127.0.0.1:0: the handler decides every answer;
/// requests are counted and recorded. Stops when dropped.
pub struct ScriptedService {
    addr: SocketAddr,
    handler: Arc<Mutex<Arc<Handler>>>,
    hits: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedService {
    pub async fn start(
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, c, s) = (handler.clone(), hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, c, s) = (h.clone(), c.clone(), s.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (h, c, s) = (h.clone(), c.clone(), s.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body: body.to_vec(),
                            };
                            c.fetch_add(1, Ordering::SeqCst);
                            let handler = h.lock().map(|g| g.clone()).expect("lock");
                            let reply = handler(&seen);
                            s.lock().expect("lock").push(seen);
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(reply.body)));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(reply.status).expect("status");
                            for (n, v) in reply.headers {
                                resp.headers_mut().append(
                                    http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                                    http::HeaderValue::from_str(&v).expect("value"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(ScriptedService {
            addr,
            handler,
            hits,
            seen,
            task,
        })
    }

    /// Replaces the handler (key rotation, outages).
    pub fn set(&self, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().expect("lock") = Arc::new(handler);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A JWKS document for `keys`.
pub fn jwks(keys: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({ "keys": keys })
}
