//! The binary: validate / schema / explain output, `run` with SIGHUP reload and SIGTERM
//! graceful shutdown (F11), and the admin API refusing to start open on a public address.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn validate_reports_every_error_with_path_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "bad.yaml",
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{ url: http://127.0.0.1:1 }]\nroutes:\n  - name: a\n    match: { path: /a }\n    upstream: missing\n  - name: b\n    match: { path: \"~ (unclosed\" }\n    upstream: app\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].upstream") && err.contains("line 10"),
        "{err}"
    );
    assert!(
        err.contains("routes[1].match.path") && err.contains("line 12"),
        "{err}"
    );

    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n    bogus: 1\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&unknown)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus") && err.contains("line 4"), "{err}");

    let bad_duration = write(dir.path(), "dur.yaml", "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nlimits:\n  idle_timeout: 10 parsecs\n");
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&bad_duration)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.idle_timeout") && err.contains("line 5"),
        "{err}"
    );
}

#[test]
fn validate_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(dir.path(), "good.yaml", "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{ url: \"${APP_URL:-http://127.0.0.1:9}\" }]\nroutes:\n  - { name: a, match: { path: /a }, upstream: app }\n");
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn schema_prints_json_schema() {
    let out = Command::new(BIN).arg("schema").output().expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let props = &v["properties"];
    for key in [
        "listeners",
        "admin",
        "limits",
        "trusted_proxies",
        "upstreams",
        "routes",
    ] {
        assert!(props.get(key).is_some(), "schema lacks {key}");
    }
}

#[test]
fn explain_prints_route_and_policy_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "g.yaml",
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  users:\n    targets: [{ url: http://127.0.0.1:9 }]\nroutes:\n  - name: users\n    match: { hosts: [api.example.com], path: \"/api/users/{id}\", methods: [GET], headers: { x-api-version: \"2\" } }\n    upstream: users\n    rewrite: { path: \"/v2/users/{id}\" }\n",
    );
    let out = Command::new(BIN)
        .args(["explain", "-c"])
        .arg(&path)
        .args([
            "GET",
            "http://api.example.com/api/users/7?x=1",
            "-H",
            "x-api-version: 2",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("route:      users"), "{text}");
    assert!(text.contains("id=7"), "{text}");
    assert!(text.contains("/v2/users/7?x=1"), "{text}");
    let order = [
        "normalize",
        "route",
        "cors preflight",
        "ip allow/deny",
        "authenticate",
        "authorize",
        "rate limit",
        "request transform",
        "cache lookup",
        "upstream call",
        "response transform",
        "cache store",
        "log and metrics",
    ];
    let mut at = 0;
    for step in order {
        let pos = text[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} missing or out of order:\n{text}"));
        at += pos;
    }
    let out = Command::new(BIN)
        .args(["explain", "-c"])
        .arg(&path)
        .args(["GET", "http://api.example.com/api/users/7"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("404 no_route"));
}

#[test]
fn admin_on_public_address_requires_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "g.yaml",
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nadmin:\n  addr: 0.0.0.0:0\n",
    );
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `gatehouse run` child, ended by its PID.
struct Child {
    child: std::process::Child,
}

impl Child {
    /// `gatehouse run -c path`, stderr discarded.
    fn run(path: &std::path::Path, stdout: Stdio) -> Child {
        Child {
            child: Command::new(BIN)
                .args(["run", "-c"])
                .arg(path)
                .stdout(stdout)
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        }
    }

    /// Its exit status, if it exits within `limit`.
    async fn exit_within(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(s) = self.child.try_wait().expect("wait") {
                    return Some(s);
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("join")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn config(port: u16, admin: u16, upstream: &str, version: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:{port}\nadmin:\n  addr: 127.0.0.1:{admin}\nlimits:\n  drain_timeout: 10s\nupstreams:\n  app:\n    targets: [{{ url: {upstream} }}]\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n    headers:\n      response: {{ set: {{ x-config: {version} }} }}\n"
    )
}

async fn wait_ready(admin: u16) {
    let ok = wait_for_async(Duration::from_secs(20), || async move {
        client()
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok, "gateway did not become ready");
}

#[tokio::test]
async fn f11_sighup_reloads_and_sigterm_drains_then_exits_zero() {
    let up = EchoUpstream::start("u").await.expect("u");
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin) = (free_port(), free_port());
    let path = write(dir.path(), "g.yaml", &config(port, admin, &up.url(), "v1"));
    let child = Child::run(&path, Stdio::null());
    let pid = child.child.id();
    wait_ready(admin).await;
    let base = format!("http://127.0.0.1:{port}");
    let r = client()
        .get(format!("{base}/a"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-config"], "v1");

    // SIGHUP reload (write in place; the watcher may also pick it up — either is fine).
    std::fs::write(&path, config(port, admin, &up.url(), "v2")).expect("write");
    signal(pid, "-HUP");
    let reloaded = wait_for_async(Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            client()
                .get(format!("{base}/a"))
                .send()
                .await
                .is_ok_and(|r| r.headers().get("x-config").is_some_and(|v| v == "v2"))
        }
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload");

    // A slow request in flight when SIGTERM arrives completes with 200.
    let slow_url = format!("{base}/slow");
    let slow = tokio::spawn(async move {
        client()
            .get(slow_url)
            .header("x-echo-delay-ms", "1500")
            .send()
            .await
    });
    assert!(
        wait_for(Duration::from_secs(5), || up
            .requests()
            .iter()
            .any(|r| r.path == "/slow"))
        .await
    );
    let t0 = Instant::now();
    signal(pid, "-TERM");
    let resp = slow
        .await
        .expect("task")
        .expect("slow request failed during drain");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap_or("")),
        Some("close")
    );
    // New connections are refused once draining.
    let refused = wait_for_async(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(refused, "still accepting after SIGTERM");
    let status = child.exit_within(Duration::from_secs(15)).await;
    let status = status.expect("gateway did not exit within the grace period");
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(12));
}

#[tokio::test]
async fn run_writes_json_access_log_lines_to_stdout() {
    let up = EchoUpstream::start("u").await.expect("u");
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin) = (free_port(), free_port());
    let path = write(dir.path(), "g.yaml", &config(port, admin, &up.url(), "v1"));
    let mut child = Child::run(&path, Stdio::piped());
    wait_ready(admin).await;
    let r = client()
        .get(format!("http://127.0.0.1:{port}/logged?api_key=s3cret"))
        .header("x-request-id", "abc")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("body");
    let r = client()
        .post(format!("http://127.0.0.1:{port}/posted"))
        .body("hello")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("body");
    signal(child.child.id(), "-TERM");
    let stdout = child.child.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let posted = lines
        .iter()
        .find(|l| l.contains("/posted"))
        .unwrap_or_else(|| panic!("no access log line for the POST in {lines:?}"));
    let posted: serde_json::Value = serde_json::from_str(posted).expect("json line");
    assert_eq!(posted["bytes_in"], 5, "{posted}");
    let line = lines
        .iter()
        .find(|l| l.contains("/logged"))
        .unwrap_or_else(|| panic!("no access log line in {lines:?}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    for field in [
        "time",
        "request_id",
        "route",
        "method",
        "path",
        "status",
        "duration_ms",
        "upstream",
        "upstream_ms",
        "consumer",
        "client_ip",
        "bytes_in",
        "bytes_out",
        "cache",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {line}");
    }
    assert_eq!(v["route"], "all");
    assert_eq!(v["status"], 200);
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["bytes_in"], 0);
    assert!(!line.contains("s3cret"), "query secret leaked: {line}");
    // The client's x-request-id is not trusted (no trusted_proxies): a fresh one is generated.
    assert_ne!(v["request_id"], "abc");
}

/// A stdout nobody reads (a full pipe, a stuck log collector) does not keep a stopping
/// gateway from exiting: the last access-log lines are given up after a bound.
#[tokio::test]
async fn sigterm_exits_even_when_stdout_is_never_read() {
    let up = EchoUpstream::start("u").await.expect("u");
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin) = (free_port(), free_port());
    let path = write(dir.path(), "g.yaml", &config(port, admin, &up.url(), "v1"));
    // Piped and never read: the pipe (64 KiB) fills with access-log lines.
    let child = Child::run(&path, Stdio::piped());
    wait_ready(admin).await;
    let c = client();
    let long = "a".repeat(1000);
    for i in 0..400 {
        let r = c
            .get(format!("http://127.0.0.1:{port}/{long}/{i}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    // Lines for 400 KiB were logged; the writer is stuck on the full pipe by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    signal(child.child.id(), "-TERM");
    let status = child.exit_within(Duration::from_secs(15)).await;
    let status = status.expect("gateway did not exit with an unread stdout");
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}
