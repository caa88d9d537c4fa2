//! A throwaway CA (rcgen) plus rustls configs and a TLS probe for SNI/ALPN tests.
//! rustls is always built with the `ring` provider here (the workspace has no aws-lc).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The ring crypto provider every config here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Gatehouse Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Issue a server (and client-auth capable) leaf for `names` (DNS names or IP literals),
    /// CN = the first name. Returns `(cert_pem, key_pem)`.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<(String, String)> {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issue a leaf for the DNS name `name` and write `DIR/NAME.crt` and `DIR/NAME.key`.
    pub fn write_pair(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.write_pair_for(dir, name, &[name])
    }

    /// Issue a leaf for `names` and write it as `DIR/STEM.crt` / `DIR/STEM.key`.
    pub fn write_pair_for(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = self.issue(names)?;
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert).with_context(|| format!("write {cert_path:?}"))?;
        std::fs::write(&key_path, key).with_context(|| format!("write {key_path:?}"))?;
        Ok((cert_path, key_path))
    }

    /// Write the CA certificate as `DIR/ca.crt` (for upstream-TLS trust settings).
    pub fn write_ca(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("ca.crt");
        std::fs::write(&path, self.cert_pem()).with_context(|| format!("write {path:?}"))?;
        Ok(path)
    }

    /// A client config trusting only this CA, offering `alpn` (e.g. `&[b"h2", b"http/1.1"]`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der())
            .expect("a freshly generated CA certificate is a valid trust anchor");
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A server config with a fresh leaf for `names`, offering `alpn`.
    pub fn server_config(
        &self,
        names: &[&str],
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<ServerConfig>> {
        let (cert_pem, key_pem) = self.issue(names)?;
        server_config_from_pem(&cert_pem, &key_pem, alpn)
    }

    /// Probe `addr` with this CA's trust: see [`tls_get`].
    pub async fn tls_get(
        &self,
        addr: SocketAddr,
        sni: &str,
        alpn: &[&[u8]],
        request: &[u8],
    ) -> anyhow::Result<TlsResponse> {
        tls_get(
            addr,
            sni,
            self.client_config(alpn),
            request,
            Duration::from_secs(5),
        )
        .await
    }
}

impl TestCa {
    /// A server config for `names` that requires a client certificate issued by this CA.
    pub fn server_config_mtls(&self, names: &[&str]) -> anyhow::Result<Arc<ServerConfig>> {
        let (cert_pem, key_pem) = self.issue(names)?;
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()?;
        let certs = pem_certs(&cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse key PEM")?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        Ok(Arc::new(cfg))
    }
}

/// An HTTPS upstream (HTTP/1.1 over TLS with the given server config). Every response is
/// JSON: `{"sni": ..., "client_cert": bool, "path": ...}`. Stops when dropped.
pub struct TlsUpstream {
    addr: SocketAddr,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    _task: crate::task::AbortOnDrop,
}

impl TlsUpstream {
    pub async fn start(config: Arc<ServerConfig>) -> anyhow::Result<TlsUpstream> {
        let listener = crate::task::bind_loopback().await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let task = crate::task::spawn_accept_loop(listener, move |stream, _| {
            let acceptor = acceptor.clone();
            let hits = h.clone();
            async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().map(str::to_string);
                let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let body = serde_json::json!({
                            "sni": sni,
                            "client_cert": client_cert,
                            "path": req.uri().path(),
                        })
                        .to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            }
        });
        Ok(TlsUpstream {
            addr,
            hits,
            _task: task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Build a server config from PEM strings.
pub fn server_config_from_pem(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = pem_certs(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse key PEM")?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Parse every certificate in a PEM string.
pub fn pem_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse certificate PEM")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in PEM");
    Ok(certs)
}

/// A client config that accepts any server certificate (still checks handshake
/// signatures): for default-certificate / wrong-SNI tests where verification would fail.
pub fn insecure_client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = provider();
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(gatehouse_proxy::upstream::tls::NoVerify(
            provider,
        )))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// What a TLS probe saw.
#[derive(Debug, Clone)]
pub struct TlsResponse {
    /// The ALPN protocol the server picked, if any.
    pub alpn: Option<Vec<u8>>,
    /// The server's chain, leaf first.
    pub peer_certs: Vec<CertificateDer<'static>>,
    /// `TLSv1_3` / `TLSv1_2`.
    pub protocol_version: Option<String>,
    /// Everything read after writing the request, until EOF or the timeout.
    pub response: Vec<u8>,
}

impl TlsResponse {
    pub fn peer_cert_der(&self) -> Option<&[u8]> {
        self.peer_certs.first().map(|c| c.as_ref())
    }
    /// True if the leaf certificate carries `name` as a DNS subjectAltName. (A byte search
    /// for the DER `[2] dNSName` encoding: exact enough for certs this module issued.)
    pub fn peer_cert_has_dns_name(&self, name: &str) -> bool {
        let Some(der) = self.peer_cert_der() else {
            return false;
        };
        let Ok(len) = u8::try_from(name.len()) else {
            return false;
        };
        if len >= 0x80 {
            return false;
        }
        let mut needle = vec![0x82, len];
        needle.extend_from_slice(name.as_bytes());
        crate::http1::find(der, &needle).is_some()
    }
    /// True if the leaf is exactly this PEM certificate.
    pub fn peer_cert_is(&self, cert_pem: &str) -> bool {
        match (pem_certs(cert_pem), self.peer_cert_der()) {
            (Ok(certs), Some(der)) => certs.first().is_some_and(|c| c.as_ref() == der),
            _ => false,
        }
    }
    pub fn response_str(&self) -> String {
        String::from_utf8_lossy(&self.response).into_owned()
    }
}

/// Connect to `addr`, handshake with `sni` (a DNS name; an IP literal sends no SNI) using
/// `config`, write `request` (may be empty: handshake only) and read until EOF or
/// `timeout`. Handshake failures are errors.
pub async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<TlsResponse> {
    let until = tokio::time::Instant::now() + timeout;
    let server_name = ServerName::try_from(sni.to_string()).context("invalid SNI name")?;
    let tcp = tokio::time::timeout_at(until, tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout_at(until, connector.connect(server_name, tcp))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake")?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let peer_certs = session
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let protocol_version = session.protocol_version().map(|v| format!("{v:?}"));
    let mut response = Vec::new();
    if !request.is_empty() {
        tls.write_all(request).await.context("TLS write")?;
        tls.flush().await.context("TLS flush")?;
        let mut tmp = [0u8; 16 * 1024];
        // EOF without close_notify and resets just end the read.
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, tls.read(&mut tmp)).await {
            if n == 0 {
                break;
            }
            response.extend_from_slice(&tmp[..n]);
        }
    }
    Ok(TlsResponse {
        alpn,
        peer_certs,
        protocol_version,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny TLS server: picks the leaf by SNI (`a.test` / anything else) and answers one
    /// line naming the SNI and ALPN it saw.
    async fn tiny_server(
        ca: &TestCa,
    ) -> anyhow::Result<(SocketAddr, String, crate::task::AbortOnDrop)> {
        let a = ca.server_config(&["a.test"], &[b"h2", b"http/1.1"])?;
        let (default_pem, default_key) = ca.issue(&["localhost", "127.0.0.1"])?;
        let default = server_config_from_pem(&default_pem, &default_key, &[b"http/1.1"])?;
        let listener = crate::task::bind_loopback().await?;
        let addr = listener.local_addr()?;
        let task = crate::task::spawn_accept_loop(listener, move |tcp, _| {
            let (a, default) = (a.clone(), default.clone());
            async move {
                let acceptor =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let Ok(start) = acceptor.await else { return };
                let sni = start.client_hello().server_name().map(str::to_owned);
                let cfg = if sni.as_deref() == Some("a.test") {
                    a
                } else {
                    default
                };
                let Ok(mut tls) = start.into_stream(cfg).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let _ = tls
                    .write_all(format!("sni={sni:?} alpn={alpn:?}").as_bytes())
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        Ok((addr, default_pem, task))
    }

    #[tokio::test]
    async fn handshake_sni_alpn_and_files() -> anyhow::Result<()> {
        let ca = TestCa::new()?;
        let (addr, default_pem, _server) = tiny_server(&ca).await?;

        let r = ca.tls_get(addr, "a.test", &[b"h2"], b"ping").await?;
        assert_eq!(r.alpn.as_deref(), Some(&b"h2"[..]));
        assert!(r.peer_cert_has_dns_name("a.test"));
        assert!(!r.peer_cert_has_dns_name("localhost"));
        assert_eq!(r.response_str(), r#"sni=Some("a.test") alpn=Some("h2")"#);
        assert_eq!(r.protocol_version.as_deref(), Some("TLSv1_3"));

        let r = ca.tls_get(addr, "localhost", &[b"http/1.1"], b"x").await?;
        assert!(r.peer_cert_is(&default_pem));
        assert!(r.peer_cert_has_dns_name("localhost"));

        // No SNI (IP literal) gets the default cert, which has an IP SAN.
        let r = ca.tls_get(addr, "127.0.0.1", &[], b"x").await?;
        assert!(r.peer_cert_is(&default_pem));

        // A name the served cert does not cover fails verification...
        assert!(ca.tls_get(addr, "b.test", &[], b"x").await.is_err());
        // ...unless verification is off.
        let r = tls_get(
            addr,
            "b.test",
            insecure_client_config(&[]),
            b"x",
            Duration::from_secs(5),
        )
        .await?;
        assert!(r.peer_cert_is(&default_pem));

        // A different CA is not trusted.
        let other = TestCa::new()?;
        assert!(other.tls_get(addr, "a.test", &[], b"x").await.is_err());

        let dir = tempfile::tempdir()?;
        let (crt, key) = ca.write_pair(dir.path(), "a.test")?;
        let ca_path = ca.write_ca(dir.path())?;
        let cfg = server_config_from_pem(
            &std::fs::read_to_string(&crt)?,
            &std::fs::read_to_string(&key)?,
            &[],
        )?;
        assert!(cfg.alpn_protocols.is_empty());
        assert_eq!(
            pem_certs(&std::fs::read_to_string(ca_path)?)?[0],
            ca.cert_der()
        );
        Ok(())
    }
}
