//! A real `redis-server` child on a free loopback port, for the shared rate-limit store
//! (F9: stop, `kill -STOP`, `DEBUG SLEEP`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const START_DEADLINE: Duration = Duration::from_secs(10);

/// True if `redis-server` is on PATH.
pub fn redis_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running `redis-server`; killed (by its PID) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start on a free port in a fresh temp dir, persistence off; waits for PING → PONG.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir for redis")?;
        let port = free_port()?;
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // F9 uses `DEBUG SLEEP` to make Redis slow; Redis 7 refuses DEBUG unless enabled.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn redis-server (is it installed? apt-get install -y redis-server)")?;
        self.child = Some(child);
        let until = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("redis-server exited with {status}; log:\n{}", self.log());
                }
            }
            if matches!(self.command(&["PING"]).await.as_deref(), Ok("+PONG\r\n")) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                anyhow::bail!(
                    "redis-server did not answer PING in time; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Send one command (RESP array of bulk strings) and return the raw reply bytes as text,
    /// e.g. `+PONG\r\n`. 2 s timeout.
    pub async fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let io = async {
            let mut s = tokio::net::TcpStream::connect(self.addr()).await?;
            s.write_all(req.as_bytes()).await?;
            let mut buf = vec![0u8; 64 * 1024];
            let n = s.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "redis closed the connection");
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(2), io)
            .await
            .context("redis command timed out")?
    }

    /// Freeze the process (`kill -STOP`): connections hang, like a wedged Redis.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }
    /// Undo [`Self::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("redis is not running")?;
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .context("run kill")?;
        anyhow::ensure!(status.success(), "kill {sig} {pid} failed");
        Ok(())
    }

    /// Kill the server (connections get refused afterwards).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGCONT first so a paused server can die and be reaped.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and dir after [`Self::stop`] ("Redis returns").
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redis_starts_pings_and_stops() -> anyhow::Result<()> {
        if !redis_available() {
            println!("SKIPPED redis_starts_pings_and_stops: redis-server not on PATH");
            return Ok(());
        }
        let mut r = RedisServer::start().await?;
        assert_eq!(r.command(&["SET", "k", "v"]).await?, "+OK\r\n");
        assert_eq!(r.command(&["GET", "k"]).await?, "$1\r\nv\r\n");
        r.pause()?;
        assert!(r.command(&["PING"]).await.is_err(), "paused redis answered");
        r.resume()?;
        assert_eq!(r.command(&["PING"]).await?, "+PONG\r\n");
        let addr = r.addr();
        r.restart().await?;
        assert_eq!(r.addr(), addr);
        assert_eq!(r.command(&["GET", "k"]).await?, "$-1\r\n");
        let pid = r.pid().context("pid")?;
        drop(r);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} still alive after drop"
        );
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        Ok(())
    }
}
