//! Host-name targets (F16): resolved off the event loop, cached, re-resolved in the background
//! every `dns_refresh`; when a lookup fails the last good addresses keep serving. A name never
//! resolved successfully fails the connect (503). IP-literal targets never reach this.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::Name;

pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
/// The lookup function: the system resolver (`getaddrinfo` on tokio's blocking pool) unless a
/// test installs its own.
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

#[derive(Clone)]
pub struct DnsCache {
    inner: Arc<Inner>,
}

struct Inner {
    lookup: Lookup,
    names: RwLock<HashMap<String, Arc<[IpAddr]>>>,
}

impl DnsCache {
    pub fn new(lookup: Lookup) -> DnsCache {
        DnsCache {
            inner: Arc::new(Inner {
                lookup,
                names: RwLock::new(HashMap::new()),
            }),
        }
    }

    fn cached(&self, host: &str) -> Option<Arc<[IpAddr]>> {
        self.inner
            .names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .cloned()
    }

    fn store(&self, host: &str, ips: Vec<IpAddr>) {
        self.inner
            .names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), ips.into());
    }

    /// Resolves `host` now; on success the cache is updated, on failure it is kept.
    pub async fn refresh(&self, host: &str) -> io::Result<Arc<[IpAddr]>> {
        match (self.inner.lookup)(host.to_string()).await {
            Ok(ips) if !ips.is_empty() => {
                self.store(host, ips);
                self.cached(host)
                    .ok_or_else(|| io::Error::other("dns cache"))
            }
            Ok(_) => Err(io::Error::other("no addresses")),
            Err(e) => Err(e),
        }
    }

    /// Cached addresses, or a first lookup.
    pub async fn resolve(&self, host: &str) -> io::Result<Arc<[IpAddr]>> {
        if let Some(ips) = self.cached(host) {
            return Ok(ips);
        }
        self.refresh(host).await
    }

    /// Keeps only `hosts` (after a reload).
    pub fn retain(&self, hosts: &[String]) {
        self.inner
            .names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|h, _| hosts.contains(h));
    }

    /// Re-resolves every host in `hosts` each `every`, until the task is aborted. A failure
    /// is logged and the last good answer stays.
    pub fn spawn_refresher(
        &self,
        hosts: Vec<String>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                for h in &hosts {
                    if let Err(e) = cache.refresh(h).await {
                        tracing::warn!(host = %h, error = %e, "DNS refresh failed; keeping the last good addresses");
                    }
                }
            }
        })
    }
}

/// `hyper_util` resolver service over the cache.
impl tower_service::Service<Name> for DnsCache {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let cache = self.clone();
        Box::pin(async move {
            let ips = cache.resolve(name.as_str()).await?;
            Ok(ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn last_good_answer_survives_failures() {
        let fail = Arc::new(AtomicBool::new(false));
        let f = fail.clone();
        let cache = DnsCache::new(Arc::new(move |host: String| {
            let fail = f.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail || host != "svc.test" {
                    Err(io::Error::other("SERVFAIL"))
                } else {
                    Ok(vec![IpAddr::from([127, 0, 0, 7])])
                }
            })
        }));
        assert!(cache.resolve("nope.test").await.is_err());
        assert_eq!(
            &*cache.resolve("svc.test").await.expect("first"),
            &[IpAddr::from([127, 0, 0, 7])]
        );
        fail.store(true, Ordering::SeqCst);
        assert!(cache.refresh("svc.test").await.is_err());
        assert_eq!(
            &*cache.resolve("svc.test").await.expect("cached"),
            &[IpAddr::from([127, 0, 0, 7])]
        );
    }
}
