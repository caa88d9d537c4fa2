//! `gatehouse`: the binary. CLI, runtime wiring, signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use gatehouse_proxy::gateway::GatewayOptions;
use gatehouse_proxy::{ReloadSource, Runtime};
use gatehouse_telemetry::{AccessLog, Metrics};

mod demo;
mod explain;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AccessLogSink {
    Stdout,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with the given config file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Worker threads for the data plane (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Where the per-request JSON access log goes: `stdout` (default) or `off`.
        #[arg(long, value_enum, default_value_t = AccessLogSink::Stdout)]
        access_log: AccessLogSink,
    },
    /// Parse and compile a config file; print every error with its YAML path and line.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show which route a request would match and the policy chain that would run.
    Explain {
        #[arg(short, long)]
        config: PathBuf,
        method: String,
        url: String,
        /// Request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Start a gateway with built-in demo backends (menu, orders, reviews).
    Demo {
        /// Port for the gateway's public listener.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port for the admin API.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            match serde_json::to_string_pretty(&gatehouse_config::json_schema()) {
                Ok(s) => {
                    // `gatehouse schema | head` closes the pipe early: not an error.
                    use std::io::Write;
                    let _ = writeln!(std::io::stdout(), "{s}");
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Explain {
            config,
            method,
            url,
            headers,
        } => explain::run(&config, &method, &url, &headers),
        Command::Run {
            config,
            workers,
            access_log,
        } => serve(workers, async move { run(&config, access_log).await }),
        Command::Demo { port, admin_port } => {
            serve(None, async move { demo::run(port, admin_port).await })
        }
    }
}

fn serve(workers: Option<usize>, fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    gatehouse_telemetry::init_logging();
    // One worker: a current-thread runtime (no work-stealing queues or cross-thread wake-ups
    // to pay for; ~the single worker process of nginx). More: the multi-thread scheduler.
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match gatehouse_config::compile_str(&text, base, &|k| std::env::var(k).ok()) {
        Ok(snap) => {
            println!(
                "{}: valid (version {}, {} routes, {} upstreams, {} listeners)",
                path.display(),
                snap.version,
                snap.routes.len(),
                snap.upstreams.len(),
                snap.listeners.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{}: {e}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &Path, access_log: AccessLogSink) -> ExitCode {
    let Some(signals) = Signals::install() else {
        return ExitCode::FAILURE;
    };
    let access_log = match access_log {
        AccessLogSink::Stdout => AccessLog::stdout(),
        AccessLogSink::Off => AccessLog::off(),
    };
    let opts = GatewayOptions {
        metrics: Arc::new(Metrics::new()),
        access_log: Arc::new(access_log),
        dns_lookup: None,
    };
    let rt = match Runtime::start_file(path, opts).await {
        Ok(rt) => rt,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", path.display());
            }
            return ExitCode::FAILURE;
        }
    };
    serve_until_signal(rt, signals).await
}

/// How long a stopping gateway tries to write the access log's last lines.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// The signals `run` answers, installed before anything is bound or reports ready: a
/// SIGHUP or SIGTERM that arrives while the gateway starts (or right after `/readyz` says
/// ready) is queued and handled, never the default action that would end the process.
pub(crate) struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(hup), Ok(term), Ok(int)) => Some(Signals { hup, term, int }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                eprintln!("error: cannot install signal handlers: {e}");
                None
            }
        }
    }
}

/// Starts the admin API and the file watcher, then waits for signals: SIGHUP reloads,
/// SIGTERM / SIGINT drain and exit 0.
pub(crate) async fn serve_until_signal(rt: Arc<Runtime>, signals: Signals) -> ExitCode {
    let admin_addr = rt.gateway().snapshot().admin.addr;
    let _admin = match gatehouse_admin::serve(rt.clone(), admin_addr).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start the admin API on {admin_addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = rt.watch() {
        tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
    }
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = rt.reload(ReloadSource::Signal).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining connections");
    rt.shutdown().await;
    // The last lines, unless stdout is not being read (then exit without them).
    if !rt.gateway().shared().access_log.flush_within(FINAL_FLUSH) {
        tracing::warn!(
            limit = ?FINAL_FLUSH,
            "access log: the last lines could not be written to stdout in time"
        );
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
