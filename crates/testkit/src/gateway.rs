//! `TestGateway`: a real gateway (the same runtime, admin API and reload supervisor the
//! binary uses) started in-process from YAML on loopback ports the OS picks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};

use gatehouse_admin::AdminHandle;
use gatehouse_proxy::gateway::GatewayOptions;
use gatehouse_proxy::{ReloadSource, Runtime};
use gatehouse_telemetry::{AccessLog, Metrics};

pub struct TestGateway {
    pub runtime: Arc<Runtime>,
    admin: AdminHandle,
    dir: tempfile::TempDir,
    path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestGateway {
    /// Starts a gateway from `yaml` (listeners should use `127.0.0.1:0`). The file lives in
    /// a temp dir, so relative paths in it resolve there; see [`TestGateway::dir`].
    pub async fn start(yaml: &str) -> Result<TestGateway> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, yaml).await
    }

    /// Like `start`, with files (certificates...) already written into `dir`.
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Result<TestGateway> {
        Self::start_with(dir, yaml, None).await
    }

    /// Like `start_in`, resolving upstream host names with `dns` (scripted DNS, F16).
    pub async fn start_with(
        dir: tempfile::TempDir,
        yaml: &str,
        dns: Option<gatehouse_proxy::upstream::dns::Lookup>,
    ) -> Result<TestGateway> {
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, yaml)?;
        let (log, logs) = AccessLog::memory();
        let opts = GatewayOptions {
            metrics: Arc::new(Metrics::new()),
            access_log: Arc::new(log),
            dns_lookup: dns,
        };
        let runtime = Runtime::start_file(&path, opts)
            .await
            .map_err(|e| anyhow!("gateway did not start: {}", e.join("; ")))?;
        let admin_addr: SocketAddr = "127.0.0.1:0".parse().context("addr")?;
        let admin = gatehouse_admin::serve(runtime.clone(), admin_addr).await?;
        Ok(TestGateway {
            runtime,
            admin,
            dir,
            path,
            logs,
        })
    }

    /// Address of the listener named `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.runtime
            .gateway()
            .listener_addr(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// Address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.runtime
            .gateway()
            .listener_addrs()
            .first()
            .map(|(_, a)| *a)
            .expect("gateway has a listener")
    }

    /// `http://ADDR{path}` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.addr, path)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// Writes a new config file (atomically, by rename, as editors and Kubernetes do).
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        let tmp = self.dir.path().join(".gatehouse.yaml.tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// Writes the file and reloads it now (as `POST /reload` does).
    pub async fn reload_with(&self, yaml: &str) -> std::result::Result<String, Vec<String>> {
        self.write_config(yaml).map_err(|e| vec![e.to_string()])?;
        self.runtime.reload(ReloadSource::Admin).await
    }

    /// Access-log lines so far, parsed.
    pub fn access_logs(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .map(|l| {
                l.iter()
                    .filter_map(|s| serde_json::from_str(s.trim()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn metrics_text(&self) -> String {
        self.runtime.gateway().metrics_text()
    }

    pub fn version(&self) -> String {
        self.runtime.gateway().snapshot().version.clone()
    }

    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }
}
