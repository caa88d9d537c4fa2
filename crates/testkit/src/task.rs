//! Task ownership: a server lives exactly as long as its handle.

use tokio::task::JoinHandle;

/// Aborts the wrapped task when dropped. The accept loops keep their connection tasks in a
/// `JoinSet` owned by the aborted future, so dropping one handle tears down the whole server.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bind an OS-picked loopback port.
pub(crate) async fn bind_loopback() -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("bind 127.0.0.1:0")
}

/// Accept forever, spawning `handle(stream, conn_index)` per connection into a `JoinSet`
/// that dies with this future.
pub(crate) fn spawn_accept_loop<F, Fut>(listener: tokio::net::TcpListener, handle: F) -> AbortOnDrop
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        let mut index = 0usize;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(handle(stream, index));
                        index += 1;
                    }
                    // EMFILE and friends: back off briefly instead of spinning.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                },
                // Reap finished connections so the set does not grow without bound.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}
