//! Hot reload (F10): file watch, admin API, bad files rejected with the old config serving,
//! atomic swaps under load, listeners added and removed, in-flight requests on their snapshot.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

fn versioned(upstream: &str, version: &str, extra_routes: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ url: {upstream} }}]\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n    headers:\n      request: {{ set: {{ x-config: {version} }} }}\n      response: {{ set: {{ x-config: {version} }} }}\n{extra_routes}"
    )
}

async fn config_of(gw: &TestGateway) -> String {
    let r = client().get(gw.url("/v")).send().await.expect("send");
    r.headers()["x-config"].to_str().expect("ascii").to_string()
}

#[tokio::test]
async fn f10_admin_reload_applies_new_config() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&versioned(&up.url(), "v1", ""))
        .await
        .expect("gw");
    assert_eq!(config_of(&gw).await, "v1");
    gw.write_config(&versioned(&up.url(), "v2", ""))
        .expect("write");
    let r = client()
        .post(gw.admin_url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["version"], gw.version().as_str());
    assert_eq!(config_of(&gw).await, "v2");
    let audit: serde_json::Value = client()
        .get(gw.admin_url("/audit"))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let entries = audit["entries"].as_array().expect("entries");
    let last = entries.last().expect("entry");
    assert_eq!(last["result"], "applied");
    assert_eq!(last["source"], "admin");
    assert!(
        last["summary"].as_str().expect("summary").contains("~all"),
        "{last}"
    );
}

#[tokio::test]
async fn f10_file_change_is_picked_up_by_the_watcher() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&versioned(&up.url(), "v1", ""))
        .await
        .expect("gw");
    gw.runtime.watch().expect("watch");
    let before = gw.version();
    gw.write_config(&versioned(&up.url(), "v2", ""))
        .expect("write");
    assert!(
        wait_for(Duration::from_secs(10), || gw.version() != before).await,
        "watcher did not reload"
    );
    assert_eq!(config_of(&gw).await, "v2");
    let audit = gw.runtime.audit();
    assert_eq!(
        audit.last().expect("entry").source,
        gatehouse_proxy::ReloadSource::File
    );
}

/// A Kubernetes ConfigMap volume: `gatehouse.yaml -> ..data/gatehouse.yaml` and
/// `..data -> ..<timestamp>/`. An update writes a new timestamped directory and renames a new
/// `..data` link over the old one: no event names the config file itself.
#[tokio::test]
async fn f10_configmap_update_is_picked_up_by_the_watcher() {
    use std::os::unix::fs::symlink;
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&versioned(&up.url(), "v1", ""))
        .await
        .expect("gw");
    let dir = gw.dir().to_path_buf();
    let stage = |name: &str, version: &str| {
        std::fs::create_dir(dir.join(name)).expect("mkdir");
        std::fs::write(
            dir.join(name).join("gatehouse.yaml"),
            versioned(&up.url(), version, ""),
        )
        .expect("write");
    };
    stage("..2026_12_01_00_00_00.1", "v2");
    symlink("..2026_12_01_00_00_00.1", dir.join("..data")).expect("link ..data");
    symlink("..data/gatehouse.yaml", dir.join("link.tmp")).expect("link");
    std::fs::rename(dir.join("link.tmp"), gw.config_path()).expect("rename");
    gw.runtime.watch().expect("watch");
    let before = gw.version();
    // Not reloaded yet: the layout was made before the watch started.
    assert_eq!(config_of(&gw).await, "v1");

    stage("..2026_12_01_00_05_00.2", "v3");
    symlink("..2026_12_01_00_05_00.2", dir.join("..data_tmp")).expect("link ..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    assert!(
        wait_for(Duration::from_secs(10), || gw.version() != before).await,
        "watcher did not see the ConfigMap swap"
    );
    assert_eq!(config_of(&gw).await, "v3");
    assert_eq!(
        gw.runtime.audit().last().expect("entry").source,
        gatehouse_proxy::ReloadSource::File
    );
}

/// Other files changing next to the config file do not reload it.
#[tokio::test]
async fn f10_other_files_in_the_directory_do_not_reload() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&versioned(&up.url(), "v1", ""))
        .await
        .expect("gw");
    gw.runtime.watch().expect("watch");
    let entries = gw.runtime.audit().len();
    for i in 0..5 {
        std::fs::write(gw.dir().join(format!("other-{i}.yaml")), "x: 1\n").expect("write");
        std::fs::rename(
            gw.dir().join(format!("other-{i}.yaml")),
            gw.dir().join("moved.yaml"),
        )
        .expect("rename");
    }
    // Past the 150 ms debounce: a reload would have added an entry ("no effective change").
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        gw.runtime.audit().len(),
        entries,
        "{:?}",
        gw.runtime.audit().last()
    );
    // ... and the watch is live: the config file itself is seen.
    gw.write_config(&versioned(&up.url(), "v2", ""))
        .expect("write");
    assert!(
        wait_for(Duration::from_secs(10), || gw.runtime.audit().len()
            > entries)
        .await,
        "watcher did not reload"
    );
    assert_eq!(config_of(&gw).await, "v2");
}

#[tokio::test]
async fn f10_bad_files_are_rejected_and_old_config_keeps_serving() {
    let up = EchoUpstream::start("u").await.expect("u");
    let good = versioned(&up.url(), "v1", "");
    let gw = TestGateway::start(&good).await.expect("gw");
    let version = gw.version();
    let bad_files = [
        ("syntax error", format!("{good}\n  - name: [unclosed\n")),
        ("invalid regex", versioned(&up.url(), "v2", "  - { name: rx, match: { path: \"~ ^/(a\" }, upstream: app }\n")),
        ("oversized regex", versioned(&up.url(), "v2", "  - { name: rx, match: { path: \"~ a{1000}{1000}\" }, upstream: app }\n")),
        ("unknown upstream", versioned(&up.url(), "v2", "  - { name: x, match: { path: /x }, upstream: nope }\n")),
        ("duplicate route", versioned(&up.url(), "v2", "  - { name: all2, match: { path: /* }, upstream: app }\n")),
        (
            "bad certificate",
            good.replace(
                "    addr: 127.0.0.1:0\n",
                "    addr: 127.0.0.1:0\n  - name: tls\n    addr: 127.0.0.1:0\n    tls: { certificates: [{ cert: missing.pem, key: missing.key }] }\n",
            ),
        ),
        ("truncated file", good[..good.len() / 2].to_string()),
    ];
    for (what, text) in &bad_files {
        let errors = gw.reload_with(text).await.expect_err(what);
        assert!(!errors.is_empty(), "{what}");
        assert_eq!(gw.version(), version, "{what}: version changed");
        assert_eq!(config_of(&gw).await, "v1", "{what}: old config not serving");
    }
    // Over the admin API: 400 with errors naming the YAML path and line.
    gw.write_config(&bad_files[3].1).expect("write");
    let r = client()
        .post(gw.admin_url("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    let msg = v["errors"][0].as_str().expect("error text");
    assert!(
        msg.contains("routes[1].upstream") && msg.contains("line"),
        "{msg}"
    );
    let status: serde_json::Value = client()
        .get(gw.admin_url("/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert!(status["last_error"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    assert!(status["failures"].as_u64().expect("failures") >= bad_files.len() as u64);
    let metrics = gw.metrics_text();
    assert!(
        metrics.contains("gatehouse_config_reloads_total{result=\"failure\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn f10_twenty_reloads_under_load_zero_failures() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = Arc::new(
        TestGateway::start(&versioned(&up.url(), "v0", ""))
            .await
            .expect("gw"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok, failures) = (gw.clone(), stop.clone(), ok.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(gw.url("/load")).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let resp_version = r
                            .headers()
                            .get("x-config")
                            .map(|v| v.to_str().unwrap_or("").to_string());
                        match r.text().await {
                            Ok(body) if status == 200 => {
                                // All of one snapshot: the header the upstream got and the
                                // one on the response come from the same config.
                                let v: serde_json::Value =
                                    serde_json::from_str(&body).unwrap_or_default();
                                let req_version = echo_header(&v, "x-config").map(str::to_string);
                                if req_version != resp_version {
                                    failures
                                        .lock()
                                        .expect("lock")
                                        .push(format!("mixed {req_version:?} {resp_version:?}"));
                                } else {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(_) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("status {status}")),
                            Err(e) => failures.lock().expect("lock").push(format!("body {e}")),
                        }
                    }
                    Err(e) => failures.lock().expect("lock").push(format!("send {e}")),
                }
            }
        }));
    }
    for i in 1..=20 {
        gw.reload_with(&versioned(&up.url(), &format!("v{i}"), ""))
            .await
            .expect("reload");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 40,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(config_of(&gw).await, "v20");
}

#[tokio::test]
async fn f10_in_flight_requests_finish_on_their_snapshot() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = Arc::new(
        TestGateway::start(&versioned(&up.url(), "old", ""))
            .await
            .expect("gw"),
    );
    let g = gw.clone();
    let slow = tokio::spawn(async move {
        client()
            .get(g.url("/slow"))
            .header("x-echo-delay-ms", "800")
            .send()
            .await
            .expect("send")
    });
    assert!(wait_for(Duration::from_secs(5), || up.hits() == 1).await);
    gw.reload_with(&versioned(&up.url(), "new", ""))
        .await
        .expect("reload");
    assert_eq!(config_of(&gw).await, "new");
    let r = slow.await.expect("task");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-config"], "old");
}

#[tokio::test]
async fn listeners_added_and_removed_by_reload() {
    let up = EchoUpstream::start("u").await.expect("u");
    let base = versioned(&up.url(), "v1", "");
    let gw = TestGateway::start(&base).await.expect("gw");
    let with_extra = base.replace(
        "    addr: 127.0.0.1:0\n",
        "    addr: 127.0.0.1:0\n  - name: extra\n    addr: 127.0.0.1:0\n",
    );
    gw.reload_with(&with_extra).await.expect("reload");
    let extra = gw.listener("extra");
    let r = client()
        .get(format!("http://{extra}/x"))
        .send()
        .await
        .expect("extra listener serves");
    assert_eq!(r.status(), 200);
    // The original listener kept its socket.
    assert_eq!(config_of(&gw).await, "v1");
    gw.reload_with(&base).await.expect("reload");
    assert!(gw.runtime.gateway().listener_addr("extra").is_none());
    let refused = wait_for_async(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(extra).await.is_err()
    })
    .await;
    assert!(refused, "removed listener still accepts");
}

#[tokio::test]
async fn reload_with_same_content_is_a_no_op() {
    let up = EchoUpstream::start("u").await.expect("u");
    let yaml = versioned(&up.url(), "v1", "");
    let gw = TestGateway::start(&yaml).await.expect("gw");
    let n = gw.runtime.audit().len();
    gw.reload_with(&yaml).await.expect("reload");
    assert_eq!(gw.runtime.audit().len(), n);
}
