//! One JSON line per request (SPEC.md "Logs"). Lines are handed to a writer thread through a
//! bounded channel so a slow stdout never blocks a request; when the channel is full the
//! line is dropped and counted rather than queued without bound.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Serialize, Debug, Default)]
pub struct AccessRecord {
    pub time: String,
    pub request_id: String,
    pub route: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: Option<String>,
    pub upstream_ms: Option<f64>,
    /// Upstream tries made (1 without retries); absent when no upstream was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    pub consumer: Option<String>,
    pub client_ip: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cache: Option<&'static str>,
    /// Set when the gateway itself produced the response (SPEC.md error code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

enum Sink {
    Off,
    Channel(SyncSender<String>),
    Memory(Arc<Mutex<Vec<String>>>),
}

pub struct AccessLog {
    sink: Sink,
    pub dropped: AtomicU64,
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog {
            sink: Sink::Off,
            dropped: AtomicU64::new(0),
        }
    }

    /// Writes to stdout from a dedicated thread.
    pub fn stdout() -> AccessLog {
        let (tx, rx) = sync_channel::<String>(8192);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Flush when the queue is drained so lines appear promptly at low rates
                    // and are batched at high rates.
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            });
        match spawned {
            Ok(_) => AccessLog {
                sink: Sink::Channel(tx),
                dropped: AtomicU64::new(0),
            },
            Err(_) => AccessLog::off(),
        }
    }

    /// Keeps lines in memory (tests).
    pub fn memory() -> (AccessLog, Arc<Mutex<Vec<String>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (
            AccessLog {
                sink: Sink::Memory(buf.clone()),
                dropped: AtomicU64::new(0),
            },
            buf,
        )
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    pub fn write(&self, record: &AccessRecord) {
        let mut line = match serde_json::to_string(record) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push('\n');
        match &self.sink {
            Sink::Off => {}
            Sink::Channel(tx) => {
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    tx.try_send(line)
                {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Sink::Memory(buf) => {
                if let Ok(mut b) = buf.lock() {
                    b.push(line);
                }
            }
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a date crate.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let ms = now.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z'));
        assert!(t.starts_with("20"));
    }

    #[test]
    fn memory_sink_keeps_json_lines() {
        let (log, buf) = AccessLog::memory();
        log.write(&AccessRecord {
            request_id: "r1".into(),
            status: 200,
            ..Default::default()
        });
        let lines = buf.lock().expect("lock");
        let v: serde_json::Value = serde_json::from_str(lines[0].trim()).expect("json");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 200);
    }
}
