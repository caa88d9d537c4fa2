//! Request mirroring: a copy of a request (same head, same buffered body) is sent to another
//! upstream from its own task; its response is read and discarded. The real request never
//! waits for it and never sees its failures. Copies are bounded (`MAX_IN_FLIGHT` per gateway):
//! when the shadow is slow, further copies are skipped rather than queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};

use gatehouse_core::upstream::Upstream;

use crate::gateway::ResolvedUpstream;

pub const MAX_IN_FLIGHT: usize = 256;

#[derive(Default)]
pub struct Mirrors {
    in_flight: AtomicUsize,
    pub sent: AtomicUsize,
    pub skipped: AtomicUsize,
}

struct Slot(Arc<crate::gateway::Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mirrors.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn spawn(
    shared: &Arc<crate::gateway::Shared>,
    ups: Arc<Upstream>,
    resolved: &ResolvedUpstream,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) {
    let m = &shared.mirrors;
    if m.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
        m.skipped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let slot = Slot(shared.clone());
    let clock = &shared.registry.clock;
    let i = ups.pick_healthy(None, &mut |n| fastrand::u32(0..n), &|i| {
        resolved.targets[i].healthy(clock)
    });
    let t = &ups.targets[i];
    let Ok(uri) = Uri::builder()
        .scheme(t.scheme.clone())
        .authority(t.authority.clone())
        .path_and_query(path_and_query)
        .build()
    else {
        return;
    };
    let mut req = Request::new(crate::body::full(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = if ups.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers.clone();
    req.headers_mut()
        .insert("x-gatehouse-mirror", HeaderValue::from_static("1"));
    let client = resolved.client.clone();
    let timeout = ups.timeouts.request;
    m.sent.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(timeout, async {
            if let Ok(resp) = client.request(req).await {
                let _ = http_body_util::BodyExt::collect(http_body_util::Limited::new(
                    resp.into_body(),
                    1024 * 1024,
                ))
                .await;
            }
        })
        .await;
    });
}
