//! TLS termination: certificates chosen by SNI from the live snapshot, so a reload that
//! changes certificates takes effect for the next handshake without rebinding.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::gateway::Shared;

pub struct SniResolver {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("listener", &self.listener)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let active = self.shared.active.load();
        active
            .snapshot
            .listener(&self.listener)
            .and_then(|l| l.tls.as_ref())
            .and_then(|tls| tls.resolve(hello.server_name()))
    }
}

pub fn server_config(
    shared: Arc<Shared>,
    listener: Arc<str>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { shared, listener }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
