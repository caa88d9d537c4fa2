//! One JSON line per request (SPEC.md "Logs"). Lines are appended to a shared buffer that a
//! writer thread drains to stdout every [`FLUSH_EVERY`], so a slow stdout never blocks a
//! request and requests never wake the writer (a channel send per line woke it through a
//! futex every time: a contended lock and a context switch per request). When more than
//! [`MAX_PENDING`] bytes wait, lines are dropped and counted rather than queued without
//! bound.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the writer thread drains the buffer while lines arrive (5x that when idle).
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes of lines waiting for the writer beyond which new lines are dropped (and counted).
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

/// One access-log line. Fields borrow from the request's context: building the record
/// allocates nothing, and the only allocation per line is the serialized buffer itself.
#[derive(Serialize, Debug)]
pub struct AccessRecord<'a> {
    pub time: LogTime,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub upstream_ms: Option<f64>,
    /// Upstream tries made (1 without retries); absent when no upstream was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    pub consumer: Option<&'a str>,
    /// Serialized as text (`"127.0.0.1"`), like `IpAddr`'s `Display`.
    pub client_ip: IpAddr,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cache: Option<&'static str>,
    /// Set when the gateway itself produced the response (SPEC.md error code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

impl AccessRecord<'_> {
    /// The JSON line (without the newline), written by hand: the fields are fixed, and
    /// serde's per-character string formatter was ~3k instructions per line. Same fields
    /// and order as the `Serialize` derive; durations are written with microsecond
    /// precision (`12.345`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(self.time.as_bytes());
        // A string that is always there has its quotes in the names around it.
        out.extend_from_slice(b"\",\"request_id\":\"");
        json_str_inner(out, self.request_id);
        out.extend_from_slice(b"\",\"route\":");
        json_opt_str(out, self.route);
        out.extend_from_slice(b",\"method\":\"");
        json_str_inner(out, self.method);
        out.extend_from_slice(b"\",\"path\":\"");
        json_str_inner(out, self.path);
        out.extend_from_slice(b"\",\"status\":");
        json_u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"duration_ms\":");
        json_ms(out, self.duration_ms);
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, self.upstream);
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_ms {
            Some(ms) => json_ms(out, ms),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(a) = self.attempts {
            out.extend_from_slice(b",\"attempts\":");
            json_u64(out, u64::from(a));
        }
        out.extend_from_slice(b",\"consumer\":");
        json_opt_str(out, self.consumer);
        out.extend_from_slice(b",\"client_ip\":\"");
        out.extend_from_slice(crate::IpText::cached(self.client_ip).as_ref());
        out.extend_from_slice(b"\",\"bytes_in\":");
        json_u64(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        json_u64(out, self.bytes_out);
        out.extend_from_slice(b",\"cache\":");
        json_opt_str(out, self.cache);
        if let Some(e) = self.error {
            out.extend_from_slice(b",\"error\":");
            json_str(out, e);
        }
        out.push(b'}');
    }
}

/// A JSON string: copied as is unless it holds a quote, a backslash or a control byte.
#[inline]
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_str_inner(out, s);
    out.push(b'"');
}

/// A JSON string's contents, escaped, without its quotes.
fn json_str_inner(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if !needs_escape(b) {
        out.extend_from_slice(b);
    } else {
        for &c in b {
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                c if c < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(c >> 4) as usize]);
                    out.push(HEX[(c & 0xf) as usize]);
                }
                c => out.push(c),
            }
        }
    }
}

/// Whether `b` holds a quote, a backslash or a control byte; eight bytes at a time (the
/// byte-by-byte scan was the access log's largest cost on long user agents and paths), the
/// last word overlapping the one before; four at a time for a short string.
fn needs_escape(b: &[u8]) -> bool {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of a byte flags it (a flag above a true one may be false, which does not
    // matter: only whether there is one is asked). Branch-free per word.
    let zero = |x: u64| x.wrapping_sub(LO) & !x;
    let bad = |x: u64| {
        // Below 0x20: the high bit of (x - 0x20 per byte) set where x had it clear.
        let control = x.wrapping_sub(LO * 0x20) & !x;
        (control | zero(x ^ (LO * u64::from(b'"'))) | zero(x ^ (LO * u64::from(b'\\')))) & HI != 0
    };
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    // Four bytes in the low half, the high half an ordinary letter.
    let half = |i: usize| {
        u64::from(u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4])))
            | (LO * u64::from(b'a')) << 32
    };
    match b.len() {
        0..4 => b.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20),
        n @ 4..8 => bad(half(0)) || bad(half(n - 4)),
        n => (0..n - 8).step_by(8).any(|i| bad(word(i))) || bad(word(n - 8)),
    }
}

#[inline]
fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (microseconds); non-finite values as 0.
fn json_ms(out: &mut Vec<u8>, ms: f64) {
    // Rounded by adding a half (positive values only): `f64::round` is a libm call.
    let us = if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0 + 0.5) as u64
    } else {
        0
    };
    json_u64(out, us / 1000);
    // The point and three decimals as one fixed-size copy (four pushes cost twice as much).
    let frac = (us % 1000) as u32;
    let digits = [
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    out.extend_from_slice(&digits);
}

impl Default for AccessRecord<'_> {
    fn default() -> Self {
        AccessRecord {
            time: LogTime::default(),
            request_id: "",
            route: None,
            method: "",
            path: "",
            status: 0,
            duration_ms: 0.0,
            upstream: None,
            upstream_ms: None,
            attempts: None,
            consumer: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            bytes_in: 0,
            bytes_out: 0,
            cache: None,
            error: None,
        }
    }
}

/// An RFC 3339 UTC timestamp with milliseconds, kept on the stack (`2026-11-25T17:47:23.376Z`).
#[derive(Clone, Copy, Default)]
pub struct LogTime {
    buf: [u8; 24],
    len: u8,
}

impl LogTime {
    pub fn now() -> LogTime {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs() as i64;
        // The date and time are formatted once per second per thread; only the
        // milliseconds change between lines.
        thread_local! {
            static LAST: std::cell::Cell<(i64, [u8; 24])> = const {
                std::cell::Cell::new((i64::MIN, [0; 24]))
            };
        }
        let mut t = LAST.with(|last| {
            let (s, buf) = last.get();
            if s == secs {
                LogTime { buf, len: 24 }
            } else {
                let t = LogTime::at(secs, 0);
                last.set((secs, t.buf));
                t
            }
        });
        t.set_millis(now.subsec_millis());
        t
    }

    /// The three digits after the seconds.
    fn set_millis(&mut self, ms: u32) {
        let ms = ms.min(999);
        self.buf[20] = b'0' + (ms / 100) as u8;
        self.buf[21] = b'0' + (ms / 10 % 10) as u8;
        self.buf[22] = b'0' + (ms % 10) as u8;
    }

    /// The timestamp `secs` seconds + `ms` milliseconds after the Unix epoch.
    pub fn at(secs: i64, ms: u32) -> LogTime {
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
        let mut t = LogTime {
            buf: *b"0000-00-00T00:00:00.000Z",
            len: 24,
        };
        // Digits written right to left into fixed positions (years 0..=9999).
        let mut put = |end: usize, mut v: i64, width: usize| {
            for i in 0..width {
                t.buf[end - i] = b'0' + (v.rem_euclid(10)) as u8;
                v /= 10;
            }
        };
        put(3, y, 4);
        put(6, mo, 2);
        put(9, d, 2);
        put(12, h, 2);
        put(15, m, 2);
        put(18, s, 2);
        t.set_millis(ms);
        t
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Debug for LogTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LogTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

enum Sink {
    Off,
    Stdout(Arc<Pending>),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// Lines not yet written, shared by the request threads and the writer thread.
struct Pending {
    buf: Mutex<Vec<u8>>,
}

impl Pending {
    /// Takes what is waiting (leaving an empty buffer with the same capacity behind).
    fn take(&self, spare: &mut Vec<u8>) {
        spare.clear();
        let mut b = match self.buf.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        std::mem::swap(&mut *b, spare);
    }
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
        let pending = Arc::new(Pending {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
        });
        let writer = Arc::downgrade(&pending);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(64 * 1024);
                let mut wait = FLUSH_EVERY;
                loop {
                    std::thread::sleep(wait);
                    let Some(p) = writer.upgrade() else {
                        return;
                    };
                    p.take(&mut batch);
                    drop(p);
                    if batch.is_empty() {
                        // Nothing logged: look less often (a line then waits up to 5x).
                        wait = FLUSH_EVERY * 5;
                    } else {
                        wait = FLUSH_EVERY;
                        write_stdout(&batch);
                    }
                }
            });
        match spawned {
            Ok(_) => AccessLog {
                sink: Sink::Stdout(pending),
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

    pub fn write(&self, record: &AccessRecord<'_>) {
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout(p) => {
                // Written straight into the pending buffer (a line is ~1 µs of work under
                // the lock, which only the flusher shares); one over the bound is taken back.
                let mut b = match p.buf.lock() {
                    Ok(b) => b,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let start = b.len();
                record.write_json(&mut b);
                b.push(b'\n');
                if b.len() > MAX_PENDING {
                    b.truncate(start);
                    drop(b);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Sink::Memory(buf) => {
                let mut line = Vec::with_capacity(384);
                record.write_json(&mut line);
                line.push(b'\n');
                if let Ok(mut b) = buf.lock() {
                    b.push(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    }

    /// Writes out what is waiting (at shutdown, so the last requests' lines are not lost),
    /// giving up after `limit`: a stdout nobody reads (a full pipe, a stuck log collector)
    /// must not keep a stopping gateway from exiting. Returns whether everything was
    /// written in time.
    pub fn flush_within(&self, limit: std::time::Duration) -> bool {
        let Sink::Stdout(p) = &self.sink else {
            return true;
        };
        let mut batch = Vec::new();
        p.take(&mut batch);
        if batch.is_empty() {
            return true;
        }
        // In a thread of its own: a blocked write cannot be interrupted, only left behind
        // (the process exits without it).
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log-flush".into())
            .spawn(move || {
                let _ = tx.send(write_stdout(&batch));
            });
        spawned.is_ok() && rx.recv_timeout(limit).unwrap_or(false)
    }
}

/// Writes a batch of lines to stdout; whether it all went out.
fn write_stdout(batch: &[u8]) -> bool {
    let mut out = std::io::stdout();
    out.write_all(batch).and_then(|()| out.flush()).is_ok()
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a date crate.
pub fn rfc3339_now() -> String {
    LogTime::now().as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_have_three_rounded_decimals() {
        for (ms, text) in [
            (0.0, "0.000"),
            (0.0004, "0.000"),
            (0.0006, "0.001"),
            (1.9996, "2.000"),
            (12.3456, "12.346"),
            (250.0, "250.000"),
            (f64::NAN, "0.000"),
            (-3.0, "0.000"),
        ] {
            let mut out = Vec::new();
            json_ms(&mut out, ms);
            assert_eq!(String::from_utf8(out).expect("ascii"), text, "{ms}");
        }
    }

    #[test]
    fn timestamp_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z'));
        assert!(t.starts_with("20"));
    }

    #[test]
    fn stdout_sink_buffers_lines_and_drops_beyond_the_bound() {
        let pending = Arc::new(Pending {
            buf: Mutex::new(Vec::new()),
        });
        let log = AccessLog {
            sink: Sink::Stdout(pending.clone()),
            dropped: AtomicU64::new(0),
        };
        let rec = AccessRecord {
            request_id: "r1",
            status: 200,
            ..Default::default()
        };
        log.write(&rec);
        log.write(&rec);
        let mut batch = Vec::new();
        pending.take(&mut batch);
        let lines: Vec<&[u8]> = batch
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_slice(lines[1]).expect("json");
        assert_eq!(v["request_id"], "r1");
        // Nothing read by the writer: bounded, the rest counted as dropped.
        let mut written = 0usize;
        while log.dropped.load(Ordering::Relaxed) == 0 {
            log.write(&rec);
            written += 1;
            assert!(written < 1_000_000, "never dropped");
        }
        let mut batch = Vec::new();
        pending.take(&mut batch);
        assert!(batch.len() <= MAX_PENDING && batch.len() > MAX_PENDING / 2);
        assert!(batch.ends_with(b"\n"), "lines are never cut");
    }

    #[test]
    fn memory_sink_keeps_json_lines() {
        let (log, buf) = AccessLog::memory();
        log.write(&AccessRecord {
            request_id: "r1",
            status: 200,
            ..Default::default()
        });
        let lines = buf.lock().expect("lock");
        let v: serde_json::Value = serde_json::from_str(lines[0].trim()).expect("json");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["client_ip"], "0.0.0.0");
    }

    #[test]
    fn hand_written_json_matches_serde() {
        let rec = AccessRecord {
            time: LogTime::at(1_795_628_843, 376),
            request_id: "r1",
            route: Some("users"),
            method: "GET",
            path: "/a?\"q\"=\\x\n\u{1}é",
            status: 404,
            duration_ms: 12.3456,
            upstream: None,
            upstream_ms: Some(0.0004),
            attempts: Some(2),
            consumer: None,
            client_ip: "2001:db8::1".parse().expect("ip"),
            bytes_in: 0,
            bytes_out: 18_446_744_073_709_551_615,
            cache: Some("hit"),
            error: Some("no_route"),
        };
        let mut ours = Vec::new();
        rec.write_json(&mut ours);
        let ours: serde_json::Value = serde_json::from_slice(&ours).expect("valid json");
        let mut theirs = serde_json::to_value(&rec).expect("serde");
        // Durations are rounded to microseconds.
        theirs["duration_ms"] = serde_json::json!(12.346);
        theirs["upstream_ms"] = serde_json::json!(0.0);
        assert_eq!(ours, theirs);
        // Short strings (below a word and half a word) with escapes, every optional set.
        let rec = AccessRecord {
            request_id: "0123456789abcdef0123456789abcdef",
            route: Some("r\"1"),
            method: "GET",
            path: "/",
            upstream: Some("u\\"),
            upstream_ms: Some(3.0),
            consumer: Some("ab\tc\"d"),
            client_ip: "203.0.113.7".parse().expect("ip"),
            ..AccessRecord::default()
        };
        let mut ours = Vec::new();
        rec.write_json(&mut ours);
        let ours: serde_json::Value = serde_json::from_slice(&ours).expect("valid json");
        assert_eq!(ours, serde_json::to_value(&rec).expect("serde"));
        let mut min = Vec::new();
        AccessRecord::default().write_json(&mut min);
        let v: serde_json::Value = serde_json::from_slice(&min).expect("valid json");
        assert!(v.get("attempts").is_none() && v.get("error").is_none());
        assert_eq!(v["upstream_ms"], serde_json::Value::Null);
    }

    #[test]
    fn durations_written_with_three_decimals() {
        for (ms, want) in [
            (0.0, "0.000"),
            (-1.0, "0.000"),
            (f64::NAN, "0.000"),
            (0.0004, "0.000"),
            (0.0005, "0.001"),
            (0.012, "0.012"),
            (1.5, "1.500"),
            (12.3456, "12.346"),
            (999.9996, "1000.000"),
            (123_456_789.25, "123456789.250"),
        ] {
            let mut out = Vec::new();
            json_ms(&mut out, ms);
            assert_eq!(String::from_utf8_lossy(&out), want, "{ms}");
        }
        let mut out = Vec::new();
        json_ms(&mut out, f64::MAX);
        assert_eq!(String::from_utf8_lossy(&out), "18446744073709551.615");
    }

    #[test]
    fn escapes_found_at_every_position() {
        for len in 0..40 {
            assert!(!needs_escape(&vec![b'a'; len]), "{len}");
            // Bytes next to the ones that need escaping, and above ASCII.
            for other in [b' ', b'!', b'#', b'[', b']', 0x7f, 0xc3] {
                assert!(!needs_escape(&vec![other; len]), "{len} {other}");
            }
            for at in 0..len {
                for bad in [b'"', b'\\', b'\n', 0, 0x1f] {
                    let mut b = vec![b'a'; len];
                    b[at] = bad;
                    assert!(needs_escape(&b), "{len} at {at}: {bad}");
                }
            }
        }
    }

    #[test]
    fn log_time_matches_the_calendar() {
        for (secs, ms, want) in [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951782400, 5, "2000-02-29T00:00:00.005Z"),
            (1795628843, 376, "2026-11-25T17:47:23.376Z"),
            (4102444799, 999, "2099-12-31T23:59:59.999Z"),
            (1709164800, 123, "2024-02-29T00:00:00.123Z"),
        ] {
            assert_eq!(LogTime::at(secs, ms).as_str(), want);
        }
    }

    #[test]
    fn cached_log_time_is_the_current_time() {
        for _ in 0..3 {
            let before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock");
            let t = LogTime::now();
            let after = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock");
            let lo = LogTime::at(before.as_secs() as i64, before.subsec_millis());
            let hi = LogTime::at(after.as_secs() as i64, after.subsec_millis());
            // Same-width ISO timestamps compare as strings.
            assert!(
                lo.as_str() <= t.as_str() && t.as_str() <= hi.as_str(),
                "{}",
                t.as_str()
            );
            std::thread::sleep(std::time::Duration::from_millis(7));
        }
    }

    #[test]
    fn escape_scan_agrees_with_the_byte_by_byte_one() {
        let naive = |b: &[u8]| b.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"plain ascii text, long enough".to_vec()];
        for len in [1usize, 7, 8, 9, 16, 23] {
            for pos in 0..len {
                for bad in [
                    b'"', b'\\', 0x00, 0x1f, b'\n', 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff,
                ] {
                    let mut v = vec![b'a'; len];
                    v[pos] = bad;
                    cases.push(v);
                }
            }
        }
        for c in &cases {
            assert_eq!(needs_escape(c), naive(c), "{c:?}");
        }
    }
}
