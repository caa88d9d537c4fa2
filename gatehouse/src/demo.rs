//! `gatehouse demo`: the restaurant example from SPEC.md with built-in backends, so a new
//! user can try the gateway with nothing but the binary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use gatehouse_proxy::gateway::GatewayOptions;
use gatehouse_proxy::Runtime;
use gatehouse_telemetry::{AccessLog, Metrics};

pub async fn run(port: u16, admin_port: u16) -> ExitCode {
    let Some(signals) = crate::Signals::install() else {
        return ExitCode::FAILURE;
    };
    let mut addrs = Vec::new();
    for name in ["menu", "orders", "reviews"] {
        match backend(name).await {
            Ok(a) => addrs.push(a),
            Err(e) => {
                eprintln!("error: cannot start the demo backend {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("gatehouse-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let path = dir.join("gatehouse.yaml");
    let yaml = format!(
        r#"# Written by `gatehouse demo`. Edit it while the demo runs: it reloads on save.
listeners:
  - name: public
    addr: 127.0.0.1:{port}
admin:
  addr: 127.0.0.1:{admin_port}
upstreams:
  menu:    {{ targets: [{{ url: "http://{menu}" }}] }}
  orders:  {{ targets: [{{ url: "http://{orders}" }}] }}
  reviews: {{ targets: [{{ url: "http://{reviews}" }}] }}
routes:
  - name: menu
    match: {{ path: "/menu/{{id}}", methods: [GET] }}
    upstream: menu
    headers:
      response: {{ set: {{ cache-control: "public, max-age=30" }} }}
  - name: orders
    match: {{ path: /orders/* }}
    upstream: orders
    max_body: 64KiB
  - name: reviews
    match: {{ path: /api/reviews }}
    upstream: reviews
    rewrite: {{ path: /reviews }}
"#,
        menu = addrs[0],
        orders = addrs[1],
        reviews = addrs[2],
    );
    if let Err(e) = std::fs::write(&path, yaml) {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let opts = GatewayOptions {
        metrics: Arc::new(Metrics::new()),
        access_log: Arc::new(AccessLog::stdout()),
        dns_lookup: None,
    };
    let rt = match Runtime::start_file(&path, opts).await {
        Ok(rt) => rt,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        r#"
Gatehouse demo is running. Config: {path}
Try:
  curl -i http://127.0.0.1:{port}/menu/42
  curl -i -X POST -d '{{"dish":"soup"}}' http://127.0.0.1:{port}/orders/42
  curl -i 'http://127.0.0.1:{port}/api/reviews?restaurant=42'
  curl -i http://127.0.0.1:{port}/nope                    # 404 no_route
  curl -i -X DELETE http://127.0.0.1:{port}/menu/42       # 405 method_not_allowed
  curl -s http://127.0.0.1:{admin_port}/routes
  curl -s http://127.0.0.1:{admin_port}/metrics | grep gatehouse_requests
  open http://127.0.0.1:{admin_port}/ for the live dashboard
Ctrl-C drains and stops.
"#,
        path = path.display()
    );
    crate::serve_until_signal(rt, signals).await
}

async fn backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(answer(name, &req))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &str, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let id = path.rsplit('/').next().unwrap_or("");
    let body = match name {
        "menu" => serde_json::json!({
            "restaurant": id,
            "items": [{"dish": "tomato soup", "price": 6.5}, {"dish": "risotto", "price": 14.0}]
        }),
        "orders" => {
            serde_json::json!({"order": id, "method": req.method().as_str(), "total": 20.5, "status": "preparing"})
        }
        _ => {
            serde_json::json!({"query": req.uri().query(), "reviews": [{"stars": 5, "text": "lovely"}]})
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        "x-backend",
        http::HeaderValue::from_static(match name {
            "menu" => "menu",
            "orders" => "orders",
            _ => "reviews",
        }),
    );
    resp
}
