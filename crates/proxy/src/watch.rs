//! Watching the config file's directory (editors and Kubernetes replace files by rename,
//! which a watch on the file itself would miss): a signal on a channel whenever the entry
//! with the file's name may have changed, or the `..data` entry of a Kubernetes ConfigMap
//! volume (there the file is a symlink into `..data/`, and an update swaps `..data` alone).
//! [`crate::runtime::Runtime::watch`] debounces and reloads.
//!
//! On Linux the inotify descriptor is read by the runtime itself (tokio `AsyncFd`), not by a
//! thread of its own as the `notify` crate does: a gateway with one worker is then a
//! single-threaded process, and the kernel skips the file reference counting that every
//! system call of a process with threads pays (`fdget` / `fput` on each read and write: 1.7 %
//! of the CPU per proxied request, bench/RESULTS.md, round 10). Elsewhere, `notify`.

use std::ffi::OsString;
use std::path::Path;

use tokio::sync::mpsc::UnboundedSender;

/// Keeps the directory watched; dropping it stops the watch.
pub struct DirWatch {
    #[cfg(target_os = "linux")]
    task: tokio::task::AbortHandle,
    #[cfg(not(target_os = "linux"))]
    _watcher: notify::RecommendedWatcher,
}

#[cfg(target_os = "linux")]
impl Drop for DirWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directory entry a ConfigMap update renames over (kubelet's atomic writer).
const CONFIGMAP_DATA: &str = "..data";

/// Whether a change to the entry `name` can change the config file `file_name`.
fn relevant(name: &std::ffi::OsStr, file_name: Option<&std::ffi::OsStr>) -> bool {
    Some(name) == file_name || name == CONFIGMAP_DATA
}

/// Watches `dir` and sends `()` on `tx` for every change (not a mere read) of an entry that
/// can change `file_name` ([`relevant`]). Must be called inside the tokio runtime.
#[cfg(target_os = "linux")]
pub fn watch_dir(
    dir: &Path,
    file_name: Option<OsString>,
    tx: UnboundedSender<()>,
) -> Result<DirWatch, String> {
    use futures_util::StreamExt;
    use inotify::{EventMask, Inotify, WatchMask};

    let inotify = Inotify::init().map_err(|e| format!("inotify: {e}"))?;
    let mask = WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE;
    inotify
        .watches()
        .add(dir, mask)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut events = inotify
        .into_event_stream([0u8; 4096])
        .map_err(|e| format!("inotify: {e}"))?;
    let task = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "config watch stopped; reload with SIGHUP or POST /reload");
                    break;
                }
            };
            if ev.mask.contains(EventMask::IGNORED) {
                // The kernel removed the watch: the directory was deleted or unmounted. No
                // further event can come; ending the task closes `tx`, which ends the watch.
                tracing::warn!(
                    "config directory removed, config watch stopped; reload with SIGHUP or POST /reload"
                );
                break;
            }
            // An overflowed queue lost events: one of them may have been the file's.
            let changed = ev.mask.contains(EventMask::Q_OVERFLOW)
                || ev
                    .name
                    .as_deref()
                    .is_some_and(|n| relevant(n, file_name.as_deref()));
            if changed && tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(DirWatch {
        task: task.abort_handle(),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn watch_dir(
    dir: &Path,
    file_name: Option<OsString>,
    tx: UnboundedSender<()>,
) -> Result<DirWatch, String> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let changed = ev.paths.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| relevant(n, file_name.as_deref()))
            });
            if changed && !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;
    Ok(DirWatch { _watcher: watcher })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    /// A fresh directory (removed when dropped, also when the test fails) watched for
    /// `gatehouse.yaml`, the receiving end of its signals, and the watch.
    fn watched() -> (tempfile::TempDir, UnboundedReceiver<()>, DirWatch) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, rx) = unbounded_channel();
        let watch = watch_dir(dir.path(), Some("gatehouse.yaml".into()), tx).expect("watch");
        (dir, rx, watch)
    }

    /// Lets the watch task read what is queued, then says whether a signal came.
    async fn signalled(rx: &mut UnboundedReceiver<()>, within: Duration) -> Option<bool> {
        match tokio::time::timeout(within, rx.recv()).await {
            Ok(Some(())) => Some(true),
            Ok(None) => None,
            Err(_) => Some(false),
        }
    }

    // The tests run on a current-thread runtime: the watch task only reads the inotify
    // queue while the test awaits, so the test decides what is queued at once.

    #[tokio::test]
    async fn only_the_files_entry_and_configmap_data_signal() {
        let (tmp, mut rx, _watch) = watched();
        let dir = tmp.path();
        for i in 0..20 {
            std::fs::write(dir.join(format!("other-{i}.yaml")), "x").expect("write");
        }
        assert_eq!(
            signalled(&mut rx, Duration::from_millis(300)).await,
            Some(false)
        );
        std::fs::write(dir.join("gatehouse.yaml"), "x").expect("write");
        assert_eq!(signalled(&mut rx, Duration::from_secs(5)).await, Some(true));
        while rx.try_recv().is_ok() {}
        std::fs::create_dir(dir.join("..data_tmp")).expect("mkdir");
        std::fs::rename(dir.join("..data_tmp"), dir.join(CONFIGMAP_DATA)).expect("rename");
        assert_eq!(signalled(&mut rx, Duration::from_secs(5)).await, Some(true));
    }

    #[tokio::test]
    async fn an_overflowed_queue_counts_as_a_change() {
        let (tmp, mut rx, _watch) = watched();
        let dir = tmp.path();
        // More events than the kernel queues for one inotify instance, none of them naming
        // the config file: only the overflow marker can make the watch signal. Writes that
        // alternate between two files, since the kernel merges an event into the one queued
        // just before it when both are the same.
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .expect("max_queued_events")
            .trim()
            .parse()
            .expect("a number");
        let mut files = [
            std::fs::File::create(dir.join("a")).expect("create"),
            std::fs::File::create(dir.join("b")).expect("create"),
        ];
        for i in 0..=max {
            std::io::Write::write_all(&mut files[i % 2], b"x").expect("write");
        }
        assert_eq!(
            signalled(&mut rx, Duration::from_secs(10)).await,
            Some(true)
        );
    }

    #[tokio::test]
    async fn a_removed_directory_ends_the_watch() {
        let (tmp, mut rx, _watch) = watched();
        let dir = tmp.path();
        std::fs::remove_dir(dir).expect("remove");
        // The sender is dropped when the task stops: recv ends instead of waiting forever.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "the watch kept running on a removed directory"
        );
    }
}
