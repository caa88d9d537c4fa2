//! The shared store: one multiplexed, reconnecting connection per Redis endpoint (a
//! `ConnectionManager` for one server, a cluster connection that routes by key slot and
//! follows `MOVED`/`ASK` for Redis Cluster) and one atomic Lua script per decision. Every key
//! carries one `{...}` hash tag, so a script touches a single slot in either mode. Redis time
//! (`TIME`), not node clocks, decides; every call is bounded by `redis.timeout` and guarded by
//! the circuit breaker, the same way in both modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::snapshot::RedisEndpoint;
use gatehouse_telemetry::metrics::RedisErrorLabels;
use gatehouse_telemetry::Metrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;

use super::breaker::{Breaker, Permit, FAILURE_THRESHOLD, OPEN_FOR};

/// GCRA in Redis, in microseconds. KEYS[1]: the key. ARGV: emission interval T, burst
/// tolerance (burst × T), tokens wanted, tokens given back (sync mode leftovers).
/// Grants as many of the wanted tokens as fit (0 = limited) and returns
/// `{granted, TAT − now}`. The key expires exactly when it would be back to a full burst, so
/// an idle key costs no memory in Redis either.
const GCRA_LUA: &str = r#"
local t = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local giveback = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
if giveback > 0 then
  tat = math.max(now, tat - giveback * t)
end
local fit = math.floor((cap - (tat - now)) / t)
local granted = math.max(0, math.min(want, fit))
if granted > 0 then tat = tat + granted * t end
if granted > 0 or giveback > 0 then
  local ttl = math.max(1, math.ceil((tat - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
end
return {granted, tat - now}
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The breaker is open: Redis was not called.
    BreakerOpen,
    Timeout,
    Redis,
}

impl StoreError {
    fn kind(self) -> &'static str {
        match self {
            StoreError::BreakerOpen => "breaker_open",
            StoreError::Timeout => "timeout",
            StoreError::Redis => "error",
        }
    }
}

/// The connection, per mode. Both are cheap to clone (handles to one multiplexed connection
/// per node) and reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn invoke(&self, inv: &redis::ScriptInvocation<'_>) -> redis::RedisResult<(i64, i64)> {
        match self {
            Conn::Standalone(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }
}

pub struct RedisStore {
    pub endpoint: RedisEndpoint,
    conn: Conn,
    script: redis::Script,
    pub breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// Must run inside a tokio runtime. Connects lazily: a Redis that is down at startup
    /// only makes the first decisions fall back to `on_error`.
    pub fn new(
        endpoint: &RedisEndpoint,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<RedisStore, String> {
        // The per-call bound is `timeout` (below); these only stop a dead socket from
        // holding a connection attempt forever.
        let io_timeout = timeout.max(Duration::from_millis(250));
        let redact = gatehouse_config::validate::redact_url_password;
        let (conn, name) = match endpoint {
            RedisEndpoint::Standalone(url) => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| format!("redis url: {e}"))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(io_timeout))
                    .set_response_timeout(Some(io_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                let conn = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| format!("redis: {e}"))?;
                (Conn::Standalone(conn), redact(url))
            }
            RedisEndpoint::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(io_timeout)
                    .response_timeout(io_timeout)
                    // Retries follow MOVED/ASK and reconnect to a node; the decision as a
                    // whole is still bounded by `timeout`.
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(|e| format!("redis cluster: {e}"))?;
                // Connects in the background: a cluster that is down at startup only makes
                // the first decisions fall back to `on_error`.
                let conn = client.get_pending_async_connection_with_config(ClusterConfig::new());
                let names: Vec<String> = nodes.iter().map(|u| redact(u)).collect();
                (Conn::Cluster(conn), format!("cluster[{}]", names.join(",")))
            }
        };
        Ok(RedisStore {
            endpoint: endpoint.clone(),
            conn,
            script: redis::Script::new(GCRA_LUA),
            breaker: Breaker::new(
                &name,
                FAILURE_THRESHOLD,
                OPEN_FOR,
                metrics.redis_breaker_state.clone(),
            ),
            metrics,
        })
    }

    /// Takes up to `want` tokens (after giving `giveback` back) from `key`. Returns
    /// `(granted, debt)` with debt = TAT − now in microseconds.
    pub async fn take(
        &self,
        key: &str,
        t_us: u64,
        cap_us: u64,
        want: u64,
        giveback: u64,
        timeout: Duration,
    ) -> Result<(u64, u64), StoreError> {
        let permit = self.breaker.permit();
        if permit == Permit::Reject {
            self.count_error(StoreError::BreakerOpen);
            return Err(StoreError::BreakerOpen);
        }
        // Reports an abandoned probe if this future is dropped mid-call.
        let guard = ProbeGuard {
            breaker: &self.breaker,
            permit: &permit,
            done: false,
        };
        let started = Instant::now();
        let mut inv = self.script.key(key);
        inv.arg(t_us).arg(cap_us).arg(want).arg(giveback);
        let result = tokio::time::timeout(timeout, self.conn.invoke(&inv)).await;
        let mut guard = guard;
        guard.done = true;
        match result {
            Ok(Ok((granted, debt))) => {
                self.breaker.on_success(&permit);
                self.metrics
                    .redis_duration
                    .observe(started.elapsed().as_secs_f64());
                Ok((granted.max(0) as u64, debt.max(0) as u64))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis rate-limit call failed");
                self.breaker.on_failure(&permit);
                self.count_error(StoreError::Redis);
                Err(StoreError::Redis)
            }
            Err(_) => {
                self.breaker.on_failure(&permit);
                self.count_error(StoreError::Timeout);
                Err(StoreError::Timeout)
            }
        }
    }

    fn count_error(&self, e: StoreError) {
        self.metrics
            .redis_errors
            .get_or_create(&RedisErrorLabels { kind: e.kind() })
            .inc();
    }
}

struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    permit: &'a Permit,
    done: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.abandon(self.permit);
        }
    }
}
