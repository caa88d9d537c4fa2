//! Polling with a deadline: tests never sleep a fixed time to wait for a condition.

use std::future::Future;
use std::time::Duration;

const POLL_EVERY: Duration = Duration::from_millis(5);

/// Polls `cond` every few milliseconds until it returns true (→ `true`) or `deadline` has
/// passed (→ `false`, after one last check). Uses `tokio::time`, so it works with paused time.
///
/// ```no_run
/// # async fn demo(upstream: &gatehouse_testkit::EchoUpstream) {
/// use std::time::Duration;
/// use gatehouse_testkit::wait_for;
/// assert!(wait_for(Duration::from_secs(2), || upstream.hits() == 3).await);
/// # }
/// ```
pub async fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return cond();
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Like [`wait_for`] for conditions that need to await (e.g. an HTTP probe).
pub async fn wait_for_async<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return cond().await;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn wait_for_true_and_timeout() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                n2.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert!(wait_for(Duration::from_secs(5), || n.load(Ordering::SeqCst) == 3).await);
        assert!(!wait_for(Duration::from_millis(30), || false).await);
        assert!(wait_for_async(Duration::from_secs(1), || async { true }).await);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_with_paused_time() {
        assert!(!wait_for(Duration::from_secs(3600), || false).await);
    }
}
