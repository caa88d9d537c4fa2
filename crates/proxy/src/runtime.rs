//! The reload supervisor: owns the gateway, the config source, and the record of every
//! config change. Reloads (file watch, SIGHUP, admin API) are serialized; a new file is
//! parsed, validated and compiled before anything is swapped, so a bad file never takes
//! effect and the old snapshot keeps serving.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use gatehouse_core::Snapshot;

use crate::gateway::{Gateway, GatewayOptions};

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReloadSource {
    Startup,
    File,
    Admin,
    Signal,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    pub time: String,
    pub source: ReloadSource,
    pub result: &'static str,
    pub version: Option<String>,
    pub previous_version: Option<String>,
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Default, Serialize, Clone)]
pub struct ReloadStatus {
    pub version: String,
    pub last_error: Option<Vec<String>>,
    pub last_error_at: Option<String>,
    pub reloads: u64,
    pub failures: u64,
}

const AUDIT_KEEP: usize = 256;

pub struct Runtime {
    gateway: Arc<Gateway>,
    config_path: Option<PathBuf>,
    reload_lock: tokio::sync::Mutex<()>,
    status: Mutex<ReloadStatus>,
    audit: Mutex<VecDeque<AuditEntry>>,
    ready: AtomicBool,
    watcher: Mutex<Option<crate::watch::DirWatch>>,
}

/// Compiles YAML text into a snapshot. Relative file paths (certificates) resolve against
/// `base_dir`.
pub fn compile_text(text: &str, base_dir: &Path) -> Result<Snapshot, Vec<String>> {
    gatehouse_config::compile_str(text, base_dir, &|k| std::env::var(k).ok())
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

fn read_and_compile(path: &Path) -> Result<Snapshot, Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    compile_text(&text, base_dir_of(path))
}

fn base_dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl Runtime {
    /// Starts serving `snapshot`; `config_path` is what reloads re-read.
    pub async fn start(
        snapshot: Snapshot,
        config_path: Option<PathBuf>,
        opts: GatewayOptions,
    ) -> std::io::Result<Arc<Runtime>> {
        let version = snapshot.version.clone();
        let gateway = Gateway::start(snapshot, opts).await?;
        let rt = Arc::new(Runtime {
            gateway,
            config_path,
            reload_lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(ReloadStatus {
                version: version.clone(),
                ..Default::default()
            }),
            audit: Mutex::new(VecDeque::new()),
            ready: AtomicBool::new(true),
            watcher: Mutex::new(None),
        });
        rt.record(AuditEntry {
            time: gatehouse_telemetry::access_log::rfc3339_now(),
            source: ReloadSource::Startup,
            result: "applied",
            version: Some(version),
            previous_version: None,
            summary: "initial config".into(),
            errors: Vec::new(),
        });
        Ok(rt)
    }

    pub async fn start_file(
        path: &Path,
        opts: GatewayOptions,
    ) -> Result<Arc<Runtime>, Vec<String>> {
        let snapshot = read_and_compile(path)?;
        Runtime::start(snapshot, Some(path.to_path_buf()), opts)
            .await
            .map_err(|e| vec![format!("cannot start listeners: {e}")])
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    pub fn audit(&self) -> Vec<AuditEntry> {
        lock(&self.audit).iter().cloned().collect()
    }

    fn record(&self, e: AuditEntry) {
        let mut a = lock(&self.audit);
        if a.len() == AUDIT_KEEP {
            a.pop_front();
        }
        a.push_back(e);
    }

    /// Validates YAML without applying it (admin `POST /config/validate`).
    pub fn validate_text(&self, text: &str) -> Result<String, Vec<String>> {
        let base = self
            .config_path
            .as_deref()
            .map(base_dir_of)
            .unwrap_or(Path::new("."));
        compile_text(text, base).map(|s| s.version)
    }

    /// Re-reads the config file and applies it. Returns the active version, or the errors
    /// (the old snapshot keeps serving).
    pub async fn reload(&self, source: ReloadSource) -> Result<String, Vec<String>> {
        let _guard = self.reload_lock.lock().await;
        let Some(path) = self.config_path.clone() else {
            return Err(vec!["this gateway was not started from a file".into()]);
        };
        let compiled = tokio::task::spawn_blocking(move || read_and_compile(&path))
            .await
            .map_err(|e| vec![format!("reload task failed: {e}")])
            .and_then(|r| r);
        self.apply_compiled(compiled, source, false).await
    }

    /// Applies a compiled snapshot (or records why there is none).
    async fn apply_compiled(
        &self,
        compiled: Result<Snapshot, Vec<String>>,
        source: ReloadSource,
        force: bool,
    ) -> Result<String, Vec<String>> {
        let old = self.gateway.snapshot();
        let result = match compiled {
            Ok(new) if !force && new.version == old.version => {
                // Same content (an editor touching the file, a repeated SIGHUP): nothing to do.
                return Ok(new.version);
            }
            Ok(new) => {
                let version = new.version.clone();
                let summary = diff_summary(&old, &new);
                match self.gateway.apply(new).await {
                    Ok(()) => Ok((version, summary)),
                    Err(e) => Err(vec![format!("cannot bind listeners: {e}")]),
                }
            }
            Err(errors) => Err(errors),
        };
        let metrics = self.gateway.metrics().clone();
        let now = gatehouse_telemetry::access_log::rfc3339_now();
        match result {
            Ok((version, summary)) => {
                metrics.reload_result(true);
                tracing::info!(version = %version, source = ?source, summary = %summary, "config reloaded");
                {
                    let mut st = lock(&self.status);
                    st.version = version.clone();
                    st.reloads += 1;
                    st.last_error = None;
                }
                self.record(AuditEntry {
                    time: now,
                    source,
                    result: "applied",
                    version: Some(version.clone()),
                    previous_version: Some(old.version.clone()),
                    summary,
                    errors: Vec::new(),
                });
                Ok(version)
            }
            Err(errors) => {
                metrics.reload_result(false);
                tracing::error!(source = ?source, errors = ?errors, "config reload rejected; the previous config keeps serving");
                {
                    let mut st = lock(&self.status);
                    st.failures += 1;
                    st.last_error = Some(errors.clone());
                    st.last_error_at = Some(now.clone());
                }
                self.record(AuditEntry {
                    time: now,
                    source,
                    result: "rejected",
                    version: None,
                    previous_version: Some(old.version.clone()),
                    summary: format!("{} error(s)", errors.len()),
                    errors: errors.clone(),
                });
                Err(errors)
            }
        }
    }

    /// Watches the config file's directory ([`crate::watch`]) and reloads on change.
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        let dir = base_dir_of(&path).to_path_buf();
        let file_name = path.file_name().map(|f| f.to_os_string());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        *lock(&self.watcher) = Some(crate::watch::watch_dir(&dir, file_name, tx)?);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Debounce: an editor save is often several events (truncate, write, rename).
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let Some(rt) = weak.upgrade() else { break };
                let _ = rt.reload(ReloadSource::File).await;
            }
        });
        Ok(())
    }

    /// Graceful shutdown with the configured drain period.
    pub async fn shutdown(&self) {
        self.ready.store(false, Ordering::Relaxed);
        lock(&self.watcher).take();
        let grace = self.gateway.snapshot().limits.drain_timeout;
        self.gateway.shutdown(grace).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// "routes: +a -b ~c; upstreams: +u; listeners: -tls" from the redacted configs. Linear in
/// the number of items (a 10,000-route file used to spend most of its reload here), and at
/// most [`MAX_LISTED`] names per section are listed.
fn diff_summary(old: &Snapshot, new: &Snapshot) -> String {
    let mut parts = Vec::new();
    for (section, key) in [("routes", true), ("upstreams", false), ("listeners", true)] {
        let a = named_items(&old.redacted[section], key);
        let b = named_items(&new.redacted[section], key);
        let old_by_name: std::collections::HashMap<&str, &serde_json::Value> =
            a.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let new_names: std::collections::HashSet<&str> =
            b.iter().map(|(n, _)| n.as_str()).collect();
        let mut changes = Vec::new();
        for (name, v) in &b {
            match old_by_name.get(name.as_str()) {
                None => changes.push(format!("+{name}")),
                Some(old_v) if *old_v != v => changes.push(format!("~{name}")),
                _ => {}
            }
        }
        for (name, _) in &a {
            if !new_names.contains(name.as_str()) {
                changes.push(format!("-{name}"));
            }
        }
        if !changes.is_empty() {
            let total = changes.len();
            changes.truncate(MAX_LISTED);
            let mut text = format!("{section}: {}", changes.join(" "));
            if total > MAX_LISTED {
                text.push_str(&format!(" (+{} more)", total - MAX_LISTED));
            }
            parts.push(text);
        }
    }
    for section in ["limits", "trusted_proxies", "admin"] {
        if old.redacted[section] != new.redacted[section] {
            parts.push(format!("{section} changed"));
        }
    }
    if parts.is_empty() {
        "no effective change".into()
    } else {
        parts.join("; ")
    }
}

/// Names listed per section in an audit summary; the rest are counted.
const MAX_LISTED: usize = 50;

fn named_items(v: &serde_json::Value, list: bool) -> Vec<(String, serde_json::Value)> {
    if list {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|item| {
                        let name = item["name"].as_str().unwrap_or("?").to_string();
                        (name, item.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        v.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(routes: usize, changed: Option<usize>) -> Snapshot {
        let mut yaml = String::from(
            "listeners:\n  - { name: public, addr: 127.0.0.1:0 }\nupstreams:\n  app:\n    targets: [{ url: http://127.0.0.1:9 }]\nroutes:\n",
        );
        for i in 0..routes {
            let timeout = if changed == Some(i) {
                ", timeout: 3s"
            } else {
                ""
            };
            yaml.push_str(&format!(
                "  - {{ name: r{i}, match: {{ path: /r{i} }}, upstream: app{timeout} }}\n"
            ));
        }
        gatehouse_config::compile_str(&yaml, std::path::Path::new("."), &|_| None)
            .expect("valid config")
    }

    #[test]
    fn diff_summary_names_changes_and_caps_long_lists() {
        let old = snapshot(3000, None);
        assert_eq!(
            diff_summary(&old, &snapshot(3000, None)),
            "no effective change"
        );
        assert_eq!(diff_summary(&old, &snapshot(3000, Some(7))), "routes: ~r7");
        let s = diff_summary(&old, &snapshot(2000, None));
        assert!(s.starts_with("routes: -r2000 -r2001 "), "{s}");
        assert!(
            s.ends_with(&format!("(+{} more)", 1000 - MAX_LISTED)),
            "{s}"
        );
    }
}
