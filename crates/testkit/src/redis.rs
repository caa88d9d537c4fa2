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
        send_command(self.addr(), args).await
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

/// A Redis Cluster of `n` masters (no replicas), each a `redis-server` child on a free
/// loopback port with persistence off, created with `redis-cli --cluster create`. Every child
/// is killed (by its PID) when dropped. Needs `redis-cli` (Debian: `redis-tools`, pulled in
/// by `redis-server`); without it `start` fails.
pub struct RedisCluster {
    /// `None` while a node is stopped ([`Self::stop_node`]).
    nodes: Vec<Option<Child>>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `n` (≥ 3: Redis refuses fewer masters) nodes, joins them into one cluster
    /// covering all 16384 slots and waits until every node reports `cluster_state:ok`.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 3, "a Redis Cluster needs at least 3 masters, got {n}");
        let dir = tempfile::tempdir().context("temp dir for redis cluster")?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(n),
            ports: Vec::with_capacity(n),
            dir,
        };
        for _ in 0..n {
            let port = free_port()?;
            let child = cluster.spawn_node(port)?;
            cluster.nodes.push(Some(child));
            cluster.ports.push(port);
        }
        let until = tokio::time::Instant::now() + START_DEADLINE;
        for i in 0..n {
            cluster
                .wait_until(i, until, "PING", |r| r == "+PONG\r\n", &["PING"])
                .await?;
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("run redis-cli (Debian package redis-tools) --cluster create")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let until = tokio::time::Instant::now() + START_DEADLINE;
        for i in 0..n {
            cluster
                .wait_until(
                    i,
                    until,
                    "cluster_state:ok",
                    |r| r.contains("cluster_state:ok"),
                    &["CLUSTER", "INFO"],
                )
                .await?;
        }
        Ok(cluster)
    }

    /// One cluster node on `port`; its `nodes-PORT.conf` (the cluster's view: node id,
    /// slots, peers) lives in the temp dir, so a restarted node rejoins with its slots.
    fn spawn_node(&self, port: u16) -> anyhow::Result<Child> {
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(self.dir.path().join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join(format!("redis-{port}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn redis-server (is it installed? apt-get install -y redis-server)")
    }

    /// Kill one node (its slots become unavailable: no replicas, no failover).
    pub fn stop_node(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a stopped node again on its port; waits until every node reports
    /// `cluster_state:ok` (it rejoins with its slots, empty).
    pub async fn restart_node(&mut self, node: usize) -> anyhow::Result<()> {
        self.stop_node(node);
        let child = self.spawn_node(self.ports[node])?;
        self.nodes[node] = Some(child);
        let until = tokio::time::Instant::now() + START_DEADLINE;
        for i in 0..self.ports.len() {
            self.wait_until(
                i,
                until,
                "cluster_state:ok",
                |r| r.contains("cluster_state:ok"),
                &["CLUSTER", "INFO"],
            )
            .await?;
        }
        Ok(())
    }

    async fn wait_until(
        &self,
        node: usize,
        until: tokio::time::Instant,
        what: &str,
        ok: impl Fn(&str) -> bool,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let addr = self.addr(node);
        loop {
            let last = send_command(addr, args).await;
            if last.as_deref().is_ok_and(&ok) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                anyhow::bail!(
                    "redis cluster node {addr} did not reach {what} in time (last: {last:?}); log:\n{}",
                    self.log(node)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
    pub fn addr(&self, node: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[node]))
    }
    /// `redis://127.0.0.1:PORT` of every node (the seed list for `redis.cluster`).
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(Child::id).collect()
    }
    /// One node's log so far (for failure messages).
    pub fn log(&self, node: usize) -> String {
        let port = self.ports[node];
        std::fs::read_to_string(self.dir.path().join(format!("redis-{port}.log")))
            .unwrap_or_default()
    }

    /// Send one command to one node; raw RESP reply as text (no redirects followed).
    pub async fn command(&self, node: usize, args: &[&str]) -> anyhow::Result<String> {
        send_command(self.addr(node), args).await
    }

    /// `CLUSTER KEYSLOT key`.
    pub async fn keyslot(&self, key: &str) -> anyhow::Result<u16> {
        let reply = self.command(0, &["CLUSTER", "KEYSLOT", key]).await?;
        reply
            .strip_prefix(':')
            .and_then(|r| r.trim_end().parse().ok())
            .with_context(|| format!("CLUSTER KEYSLOT reply {reply:?}"))
    }

    /// The node (index) that serves `slot`, from `CLUSTER NODES`.
    pub async fn node_of_slot(&self, slot: u16) -> anyhow::Result<usize> {
        let nodes = self.command(0, &["CLUSTER", "NODES"]).await?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if owns {
                let port: u16 = fields[1]
                    .split('@')
                    .next()
                    .and_then(|hp| hp.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("CLUSTER NODES line {line:?}"))?;
                return self
                    .ports
                    .iter()
                    .position(|p| *p == port)
                    .with_context(|| format!("slot {slot} served by unknown port {port}"));
            }
        }
        anyhow::bail!("no node serves slot {slot}")
    }

    /// Kill every node (by PID) and reap it.
    pub fn stop(&mut self) {
        for mut child in self.nodes.drain(..).flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if `redis-cli` is on PATH.
pub fn redis_cli_available() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn send_command(addr: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
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

    #[tokio::test]
    async fn redis_cluster_starts_serves_all_slots_and_stops() -> anyhow::Result<()> {
        if !redis_available() {
            println!(
                "SKIPPED redis_cluster_starts_serves_all_slots_and_stops: redis-server not on PATH"
            );
            return Ok(());
        }
        assert!(
            redis_cli_available(),
            "redis-server is installed but redis-cli is not (Debian: apt-get install -y redis-tools)"
        );
        let c = RedisCluster::start(3).await?;
        assert_eq!(c.len(), 3);
        let info = c.command(1, &["CLUSTER", "INFO"]).await?;
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        // Slots 0 and 16383 live on different masters.
        assert_ne!(c.node_of_slot(0).await?, c.node_of_slot(16383).await?);
        assert_eq!(c.keyslot("{a}x").await?, c.keyslot("{a}y").await?);
        let pids = c.pids();
        let addrs: Vec<SocketAddr> = (0..3).map(|i| c.addr(i)).collect();
        drop(c);
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "redis-server {pid} still alive after drop"
            );
        }
        for addr in addrs {
            assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        }
        Ok(())
    }
}
