#!/usr/bin/env python3
"""Gatehouse vs nginx on loopback (issue #6). Started by bench/run.sh; python3 stdlib only.

Every subject is measured the same way, interleaved within each repetition:
  direct           the fixed upstream (nginx `return 200`, ~100-byte body) hit directly
  nginx            nginx as a reverse proxy (one worker, upstream keep-alive, no access log)
  gatehouse        Gatehouse, one worker thread, access log off (metrics are always on)
  gatehouse-chain  Gatehouse with the realistic chain: JWT verification (RS256, 2048-bit key
                   made with openssl for this run), a local rate limit that never triggers,
                   metrics and the JSON access log on (written to /dev/null)

Pinning: the server under test runs on core 1; the load generator (wrk / h2load) and the
upstream run on core 0, for every subject. Every run is bounded in time, and only the
processes this script started are stopped, by PID.
"""

import argparse
import atexit
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from string import Template

import hot_functions

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TEMPLATES = BENCH / "templates"
PATH = "/bench/hello"

SERVER_CORE = "1"
CLIENT_CORE = "0"
if (os.cpu_count() or 1) < 2:
    SERVER_CORE = "0"

STARTED = []  # Popen objects this run started; stopped by PID at exit


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def start(cmd, name, stdout=subprocess.DEVNULL, stderr=None, env=None, stdin=None):
    log(f"start {name}: {' '.join(map(str, cmd))}")
    p = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=stdout,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    p.bench_name = name
    STARTED.append(p)
    return p


def stop(p, grace=15):
    """SIGTERM, then SIGKILL, to this one PID only."""
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        except ProcessLookupError:
            pass
    if p in STARTED:
        STARTED.remove(p)


@atexit.register
def _cleanup():
    for p in list(STARTED):
        try:
            stop(p, grace=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.bench_name}: port {port} not listening after {timeout}s")


def wait_http_ok(url, proc, timeout=120, headers=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{proc.bench_name}: {url} not OK after {timeout}s ({last})")


def mem_kib(pid):
    """VmRSS / VmHWM (peak RSS) of one process, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def cpu_ticks(pid):
    """(utime, stime, minor faults, context switches) of a process and all its descendants,
    threads included, times in clock ticks: what the server spent on its core, user and
    kernel, whatever the wall clock did."""
    kids, stats = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(rest[1]), []).append(int(d))
        stats[int(d)] = (int(rest[11]), int(rest[12]), int(rest[7]))
    total, todo = [0, 0, 0, 0], [pid]
    while todo:
        p = todo.pop()
        for i, v in enumerate(stats.get(p, (0, 0, 0))):
            total[i] += v
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if "ctxt_switches" in line:  # voluntary and nonvoluntary
                            total[3] += int(line.split()[-1])
        except OSError:
            pass
        todo += kids.get(p, [])
    return tuple(total)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_per_request(t0, t1, run):
    """(CPU µs per request, of which user, core busy fraction) between two `cpu_ticks` of the
    server around a wrk `run`."""
    user, system = t1[0] - t0[0], t1[1] - t0[1]
    per_req = 1e6 / CLK_TCK / max(1, run["requests"])
    return (user + system) * per_req, user * per_req, (user + system) / CLK_TCK / (run["duration_us"] / 1e6)


# ---------------------------------------------------------------- load generators


def wrk(url, duration, conns, script_parts, env=None, timeout_s="5s", headers=None):
    tag = "-".join(p.stem for p in script_parts) + ("-auth" if headers else "")
    script = Path(ARGS.tmp) / f"wrk-{tag}.lua"
    if not script.exists():
        parts = [p.read_text() for p in script_parts]
        for k, v in (headers or {}).items():
            parts.insert(0, f'wrk.headers["{k}"] = "{v}"')
        script.write_text("\n".join(parts))
    cmd = [
        "taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
        "--timeout", timeout_s, "-s", str(script), url,
    ]
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=e)
    m = re.search(r"BENCHJSON (\{.*\})", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    d = json.loads(m.group(1))
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    d["errors"] = d["connect"] + d["read"] + d["write"] + d["timeout"] + d["status"]
    return d


def h2load(url, n, conns, timeout=600, headers=None):
    """Exactly `n` HTTP/1.1 requests (keep-alive) from core 0; returns wall seconds."""
    cmd = ["taskset", "-c", CLIENT_CORE, "h2load", "--h1", "-n", str(n), "-c", str(conns),
           "-t", "1", url]
    for k, v in (headers or {}).items():
        cmd[-1:-1] = ["-H", f"{k}: {v}"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - t0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", r.stdout)
    if r.returncode != 0 or not m or int(m.group(4)) != n:
        raise RuntimeError(f"h2load failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return wall


# ---------------------------------------------------------------- the chain's JWT


def b64url(b):
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt():
    """A 2048-bit RSA key made for this run (openssl), its public half for the gateway, and
    one RS256 token valid for a day: the chain subject verifies it on every request."""
    key, pub = Path(ARGS.tmp) / "jwt.key", Path(ARGS.tmp) / "jwt.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", key], check=True, capture_output=True, timeout=120)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True, timeout=60)
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
    claims = b64url(json.dumps({"iss": "https://idp.bench/", "aud": "bench", "sub": "bench-user",
                                "iat": now, "exp": now + 86400, "scope": "read write"}).encode())
    signing_input = f"{header}.{claims}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input,
                         check=True, capture_output=True, timeout=60).stdout
    return pub, f"{header}.{claims}.{b64url(sig)}"


# ---------------------------------------------------------------- subjects


def nginx_conf(template, name, **kw):
    conf = Path(ARGS.tmp) / f"{name}.conf"
    conf.write_text(Template((TEMPLATES / template).read_text()).substitute(tmp=ARGS.tmp, **kw))
    return conf


def gatehouse_yaml(name, port, admin_port, upstream_port, routes=1, variant="a", chain=False):
    """One listener and upstream; `routes` routes of mixed kinds (exact, prefix, param),
    the benchmarked one (`/bench/*`) among them. `chain`: the bench route verifies an RS256
    JWT and has a local rate limit that never triggers."""
    lines = [
        "# generated by bench/harness.py",
        "listeners:",
        f"  - {{ name: public, addr: 127.0.0.1:{port} }}",
        f"admin: {{ addr: 127.0.0.1:{admin_port} }}",
        "limits: { max_connections: 20000, drain_timeout: 1s }",
        "upstreams:",
        "  app:",
        f"    targets: [{{ url: http://127.0.0.1:{upstream_port} }}]",
    ]
    if chain:
        lines += [
            "auth:",
            "  bench_jwt:",
            "    type: jwt",
            "    issuer: https://idp.bench/",
            "    audiences: [bench]",
            "    algorithms: [RS256]",
            f"    keys: [{{ file: {JWT_PUB}, kid: bench }}]",
        ]
    lines.append("routes:")
    for i in range(routes - 1):
        kind = i % 3
        path = (f"/svc{i}/items", f"/svc{i}/*", f"/svc{i}/items/{{id}}")[kind]
        lines.append(f"  - {{ name: r{i}, match: {{ path: \"{path}\" }}, upstream: app }}")
    if chain:
        lines.append("  - { name: bench, match: { path: /bench/* }, upstream: app, auth: { any_of: [bench_jwt] },"
                     " rate_limit: [{ requests: 1000000000, per: 1h, key: ip }] }")
    else:
        lines.append("  - { name: bench, match: { path: /bench/* }, upstream: app }")
    if variant == "b":
        lines.append("  - { name: reload-marker, match: { path: /reload-marker }, upstream: app }")
    f = Path(ARGS.tmp) / f"{name}.yaml"
    f.write_text("\n".join(lines) + "\n")
    return f


class Subject:
    def __init__(self, name, port, proc, admin_port=None, headers=None):
        self.name, self.port, self.proc, self.admin_port = name, port, proc, admin_port
        self.headers = headers or {}

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{PATH}"


def start_upstream(core=CLIENT_CORE, wrap=()):
    port = free_port()
    conf = nginx_conf("nginx-upstream.conf", f"upstream-{port}", port=port)
    p = start(["taskset", "-c", core, *wrap, "nginx", "-p", ARGS.tmp, "-e", f"{ARGS.tmp}/up-{port}.err", "-c", conf],
              f"upstream:{port}")
    wait_port(port, p, timeout=300 if wrap else 30)
    return Subject("direct", port, p)


def start_nginx_proxy(upstream_port, wrap=()):
    port = free_port()
    conf = nginx_conf("nginx-proxy.conf", f"proxy-{port}", port=port, upstream_port=upstream_port)
    p = start(["taskset", "-c", SERVER_CORE, *wrap, "nginx", "-p", ARGS.tmp, "-e", f"{ARGS.tmp}/px-{port}.err", "-c", conf],
              f"nginx-proxy:{port}")
    wait_port(port, p, timeout=300 if wrap else 30)
    return Subject("nginx", port, p)


def start_gatehouse(name, upstream_port, access_log=False, routes=1, wrap=(), chain=False, binary=None):
    port, admin = free_port(), free_port()
    cfg = gatehouse_yaml(f"{name}-{port}", port, admin, upstream_port, routes=routes, chain=chain)
    errlog = open(Path(ARGS.tmp) / f"{name}-{port}.stderr", "w")
    p = start(["taskset", "-c", SERVER_CORE, *wrap, binary or ARGS.gatehouse, "run", "-c", cfg, "--workers", "1",
               "--access-log", "stdout" if access_log else "off"],
              f"{name}:{port}", stderr=errlog, env={**os.environ, "RUST_LOG": "warn"})
    s = Subject(name, port, p, admin, headers={"Authorization": f"Bearer {JWT}"} if chain else None)
    s.config = cfg
    wait_http_ok(s.url, p, timeout=600 if wrap else 120, headers=s.headers)
    return s


def start_subject(kind, upstream_port, wrap=(), binary=None):
    """A subject by name; `binary` runs another Gatehouse build than --gatehouse."""
    if kind == "direct":
        return start_upstream(core=SERVER_CORE if wrap else CLIENT_CORE, wrap=wrap)
    if kind == "nginx":
        return start_nginx_proxy(upstream_port, wrap=wrap)
    if kind == "gatehouse":
        return start_gatehouse("gatehouse", upstream_port, wrap=wrap, binary=binary)
    if kind == "gatehouse-chain":
        return start_gatehouse("gatehouse-chain", upstream_port, access_log=True, wrap=wrap, chain=True,
                               binary=binary)
    raise ValueError(kind)


# ---------------------------------------------------------------- sections


def section_throughput(upstream, results):
    """Requests/s (median of interleaved bounded runs), ratio to direct in the same
    repetition, p50/p99 at a fixed rate below saturation, peak RSS."""
    subjects = [upstream] + [start_subject(k, upstream.port) for k in ("nginx", "gatehouse", "gatehouse-chain")]
    report = TEMPLATES / "report.lua"
    paced = TEMPLATES / "paced.lua"
    for s in subjects:  # warm-up: pools, caches, allocator arenas
        wrk(s.url, 2, ARGS.connections, [report], headers=s.headers)
    runs = {s.name: [] for s in subjects}
    for rep in range(ARGS.reps):
        direct = None
        for s in subjects:
            t0 = cpu_ticks(s.proc.pid)
            d = wrk(s.url, ARGS.duration, ARGS.connections, [report], headers=s.headers)
            t1 = cpu_ticks(s.proc.pid)
            # CPU (user + system) of the server per request, and how busy its core was.
            d["cpu_us"], d["user_us"], d["busy"] = cpu_per_request(t0, t1, d)
            d["faults"] = (t1[2] - t0[2]) / max(1, d["requests"])
            d["switches"] = (t1[3] - t0[3]) / max(1, d["requests"])
            if s.name == "direct":
                direct = d["rps"]
            d["ratio"] = d["rps"] / direct
            runs[s.name].append(d)
            log(f"rep {rep + 1}/{ARGS.reps} {s.name:16} {d['rps']:9.0f} req/s  ratio {d['ratio']:.3f}  "
                f"cpu {d['cpu_us']:.2f} us/req (user {d['user_us']:.2f})  busy {d['busy'] * 100:.0f}%  "
                f"faults {d['faults']:.3f}  switches {d['switches']:.3f}  errors {d['errors']}")
    # Fixed rate: connections * 1000 / delay req/s in total, far below every subject's peak.
    delay_ms = max(1, int(ARGS.lat_conns * 1000 / ARGS.rate))
    lat = {s.name: [] for s in subjects}
    for rep in range(ARGS.lat_reps):
        for s in subjects:
            d = wrk(s.url, ARGS.lat_duration, ARGS.lat_conns, [paced, report], env={"BENCH_DELAY_MS": str(delay_ms)},
                    headers=s.headers)
            lat[s.name].append(d)
            log(f"latency rep {rep + 1} {s.name:16} {d['rps']:7.0f} req/s  p50 {d['p50_us']}us p99 {d['p99_us']}us")
    out = {}
    for s in subjects:
        r = runs[s.name]
        out[s.name] = {
            "rps_median": statistics.median(x["rps"] for x in r),
            "rps_runs": [round(x["rps"]) for x in r],
            "ratio_median": statistics.median(x["ratio"] for x in r),
            "cpu_us_median": statistics.median(x["cpu_us"] for x in r),
            "user_us_median": statistics.median(x["user_us"] for x in r),
            "busy_median": statistics.median(x["busy"] for x in r),
            "errors": sum(x["errors"] for x in r) + sum(x["errors"] for x in lat[s.name]),
            "rate": statistics.median(x["rps"] for x in lat[s.name]),
            "p50_us": statistics.median(x["p50_us"] for x in lat[s.name]),
            "p99_us": statistics.median(x["p99_us"] for x in lat[s.name]),
            "peak_rss_kib": mem_kib(s.proc.pid)["VmHWM"],
        }
    # Paired with nginx, repetition by repetition: the machine's speed drifts between
    # repetitions (the same subject's req/s moves by ±15 %), much less between two runs a
    # few seconds apart, so a ratio within a repetition says more than two medians do.
    paired = {}
    for k in ("gatehouse", "gatehouse-chain"):
        if k in runs and "nginx" in runs:
            rps = [g["rps"] / n["rps"] for g, n in zip(runs[k], runs["nginx"])]
            cpu = [g["cpu_us"] / n["cpu_us"] for g, n in zip(runs[k], runs["nginx"])]
            paired[k] = {"rps_ratio_median": statistics.median(rps), "cpu_ratio_median": statistics.median(cpu),
                         "rps_ratios": [round(x, 3) for x in rps],
                         "ahead": sum(x >= 1.0 for x in rps), "reps": len(rps)}
            log(f"paired {k:16} req/s vs nginx median {paired[k]['rps_ratio_median']:.3f} "
                f"(ahead in {paired[k]['ahead']}/{len(rps)}), CPU/request vs nginx {paired[k]['cpu_ratio_median']:.3f}")
    results["throughput"] = out
    results["throughput_paired"] = paired
    results["throughput_params"] = {
        "reps": ARGS.reps, "duration_s": ARGS.duration, "connections": ARGS.connections,
        "lat_rate": ARGS.rate, "lat_conns": ARGS.lat_conns, "lat_duration_s": ARGS.lat_duration,
    }
    for s in subjects[1:]:
        stop(s.proc)


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_count(name, start_fn, cg_dir, profile=True):
    """User-space instructions per request under callgrind: zero the counters after a
    warm-up, send exactly N requests, dump; zero again, stay idle for as long, dump;
    (busy - idle) / N. `start_fn(wrap)` starts the subject under the given command prefix."""
    out_file = cg_dir / f"{name}.%p"
    wrap = ("valgrind", "--tool=callgrind", f"--dump-instr={'yes' if ARGS.dump_instr else 'no'}",
            f"--callgrind-out-file={out_file}",
            *(("--cache-sim=yes", "--branch-sim=yes") if ARGS.cache_sim else ()),
            *(("--demangle=no",) if ARGS.hot_functions else ()))
    s = start_fn(wrap)
    pid = s.proc.pid
    h2load(s.url, ARGS.instr_warmup, 4, timeout=900, headers=s.headers)

    def control(flag):
        subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=120)

    control("-z")
    wall = h2load(s.url, ARGS.instr_requests, ARGS.instr_conns, timeout=1800, headers=s.headers)
    control("-d")
    busy = cg_dir / f"{name}.{pid}.1"
    control("-z")
    idle_s = min(wall, 30.0)
    time.sleep(idle_s)
    control("-d")
    idle = cg_dir / f"{name}.{pid}.2"
    busy_ir, idle_ir = callgrind_total(busy), callgrind_total(idle)
    per_req = (busy_ir - idle_ir * wall / idle_s) / ARGS.instr_requests
    log(f"instructions {name:16} {per_req:10.0f} user instr/request (busy {busy_ir} idle {idle_ir} over {wall:.1f}s)")
    if profile:
        top = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=99", str(busy)],
                             capture_output=True, text=True, timeout=300).stdout
        (Path(ARGS.out) / f"profile-{name}.txt").write_text(top)
        top_incl = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(busy)],
                                  capture_output=True, text=True, timeout=300).stdout
        (Path(ARGS.out) / f"profile-{name}-inclusive.txt").write_text(top_incl)
    stop(s.proc, grace=60)
    return {"user": per_req, "kernel": None, "counter": "callgrind",
            "busy_ir": busy_ir, "idle_ir": idle_ir, "wall_s": wall, "dump": str(busy)}


def section_instructions(upstream, results):
    """User-space instructions per request. `perf stat -e instructions:u,instructions:k`
    when the machine has a PMU; otherwise callgrind (user space only): zero the counters
    after a warm-up, send exactly N requests, dump; zero again, stay idle for as long, dump;
    (requests - idle) / N."""
    out = {}
    mode = ARGS.counter
    for kind in ARGS.instr_subjects:
        cg_dir = Path(ARGS.out) / "callgrind"
        cg_dir.mkdir(parents=True, exist_ok=True)
        if mode == "perf":
            s = start_subject(kind, upstream.port)
            h2load(s.url, ARGS.instr_warmup, 4, headers=s.headers)
            pf = Path(ARGS.tmp) / f"perf-{kind}.txt"
            perf = start(["perf", "stat", "-x,", "-o", pf, "-e", "instructions:u,instructions:k", "-p", s.proc.pid],
                         f"perf:{kind}")
            time.sleep(0.5)
            h2load(s.url, ARGS.instr_requests, ARGS.instr_conns, headers=s.headers)
            os.kill(perf.pid, signal.SIGINT)
            perf.wait(timeout=30)
            STARTED.remove(perf)
            vals = {}
            for line in pf.read_text().splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[2].startswith("instructions"):
                    vals[parts[2]] = int(parts[0])
            out[kind] = {
                "user": vals.get("instructions:u", 0) / ARGS.instr_requests,
                "kernel": vals.get("instructions:k", 0) / ARGS.instr_requests,
                "counter": "perf",
            }
            stop(s.proc)
            continue
        out[kind] = callgrind_count(kind, lambda wrap, k=kind: start_subject(k, upstream.port, wrap=wrap), cg_dir)
    if ARGS.hot_functions:
        dumps = [out[k]["dump"] for k in ("gatehouse", "gatehouse-chain") if k in out]
        n = hot_functions.write(ROOT / "gatehouse/hot-functions.txt", ARGS.instr_requests, dumps)
        log(f"gatehouse/hot-functions.txt: {n} functions (the release build's link order; rebuild to use it)")
    results["instructions"] = out
    results["instructions_params"] = {"requests": ARGS.instr_requests, "warmup": ARGS.instr_warmup, "counter": mode}


def tcp_counters():
    """Loopback-wide TCP counters: segments sent, pure ACKs received, delayed ACKs sent."""
    def table(path):
        rows = [line.split() for line in open(path)]
        out = {}
        for head, vals in zip(rows[::2], rows[1::2]):
            out.update({f"{head[0]}{k}": int(v) for k, v in zip(head[1:], vals[1:])})
        return out
    t = {**table("/proc/net/snmp"), **table("/proc/net/netstat")}
    return {"out_segs": t["Tcp:OutSegs"], "pure_acks": t["TcpExt:TCPPureAcks"],
            "delayed_acks": t["TcpExt:DelayedACKs"]}


def section_syscalls(upstream, results):
    """System calls per request (`strace -f -c` attached after a warm-up, over the same N
    requests as the instruction count): with no PMU there is no kernel instruction count, and
    the number of kernel entries is the next best thing. strace slows the server down; only
    the counts are reported, not its timings."""
    out = {}
    for kind in ARGS.instr_subjects:
        s = start_subject(kind, upstream.port)
        h2load(s.url, ARGS.instr_warmup, 4, headers=s.headers)
        f = Path(ARGS.tmp) / f"strace-{kind}.txt"
        st = start(["strace", "-f", "-c", "-o", f, "-p", str(s.proc.pid)], f"strace:{kind}",
                   stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        h2load(s.url, ARGS.instr_requests, 8, headers=s.headers)
        time.sleep(0.3)
        os.kill(st.pid, signal.SIGINT)
        st.wait(timeout=60)
        STARTED.remove(st)
        # TCP segments on loopback per request, without strace slowing things down: 4 carry
        # data (client → server → upstream and back); the rest are pure ACKs and window
        # updates, each a trip through the TCP stack on some core.
        seg0 = tcp_counters()
        h2load(s.url, ARGS.instr_requests, ARGS.connections, headers=s.headers)
        seg1 = tcp_counters()
        segs = {k: (seg1[k] - seg0[k]) / ARGS.instr_requests for k in seg0}
        stop(s.proc)
        calls = {}
        for line in f.read_text().splitlines():
            parts = line.split()
            # `% time seconds usecs/call calls [errors] syscall`; the total line has no usecs.
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
        # Timer sleeps of the access-log writer thread are not the request path.
        per_req = {k: v / ARGS.instr_requests for k, v in calls.items() if k != "clock_nanosleep"}
        out[kind] = {"per_request": sum(per_req.values()),
                     "top": dict(sorted(per_req.items(), key=lambda kv: -kv[1])[:4]),
                     "segments": segs}
        log(f"syscalls {kind:20s} {out[kind]['per_request']:.2f}/request  {out[kind]['top']}  segments {segs}")
    results["syscalls"] = out
    results["syscalls_params"] = {"requests": ARGS.instr_requests}


def head_to_head(pair, tag):
    """Loads the two subjects of `pair` (A, B) at once, each with its own wrk and half the
    connections, ARGS.reps times; per run and as medians: req/s, CPU µs per request (user),
    and B's ratios to A."""
    report = TEMPLATES / "report.lua"
    half = ARGS.connections // 2
    for s in pair:
        wrk(s.url, 2, half, [report], headers=s.headers)
    rows = []
    for rep in range(ARGS.reps):
        t0 = [cpu_ticks(s.proc.pid) for s in pair]
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            runs = list(ex.map(lambda s: wrk(s.url, ARGS.duration, half, [report], headers=s.headers), pair))
        t1 = [cpu_ticks(s.proc.pid) for s in pair]
        row = {}
        for key, d, a, b in zip(("a", "b"), runs, t0, t1):
            cpu, user, _ = cpu_per_request(a, b, d)
            row[key] = {"rps": d["rps"], "cpu_us": cpu, "user_us": user, "errors": d["errors"]}
        row["rps_ratio"] = row["b"]["rps"] / row["a"]["rps"]
        row["cpu_ratio"] = row["b"]["cpu_us"] / row["a"]["cpu_us"]
        rows.append(row)
        a, b = row["a"], row["b"]
        log(f"{tag} {rep + 1}/{ARGS.reps}: A {a['rps']:7.0f} req/s cpu {a['cpu_us']:.2f} us "
            f"(user {a['user_us']:.2f}); B {b['rps']:7.0f} req/s cpu {b['cpu_us']:.2f} us "
            f"(user {b['user_us']:.2f}); req/s ratio {row['rps_ratio']:.3f}, CPU ratio {row['cpu_ratio']:.3f}")
    med = statistics.median
    return {
        "connections_each": half,
        "reps": rows,
        "rps_ratio_median": med(r["rps_ratio"] for r in rows),
        "rps_ratio_min": min(r["rps_ratio"] for r in rows),
        "rps_ratio_max": max(r["rps_ratio"] for r in rows),
        "cpu_ratio_median": med(r["cpu_ratio"] for r in rows),
        "cpu_ratio_below_1": sum(r["cpu_ratio"] < 1.0 for r in rows),
        "ahead": sum(r["rps_ratio"] >= 1.0 for r in rows),
        "errors": sum(r[k]["errors"] for r in rows for k in ("a", "b")),
        **{f"{k}_{f}_median": med(r[k][f] for r in rows) for k in ("a", "b")
           for f in ("rps", "cpu_us", "user_us")},
    }


def section_headtohead(upstream, results):
    """Two servers on the server's core at the same time, each loaded by its own wrk with half
    the connections: the two share the core (and the upstream, and the client's core) under
    the same conditions at the same moment, so the machine's drift from one run to the next,
    which moves separate runs by ±15 %, cancels out of the ratio. Whichever does less work per
    request serves more of them in its share of the core.

    By default nginx (A) against Gatehouse (B). With `--versus BINARY`, A is that Gatehouse
    binary and B the one under test (`--gatehouse`), both as `--versus-subject`: how a change
    is measured (an A/A run of one binary against itself: CPU ratio within ±1 %)."""
    if ARGS.versus:
        kind = ARGS.versus_subject
        pair = [start_subject(kind, upstream.port, binary=ARGS.versus), start_subject(kind, upstream.port)]
        names = [f"`{ARGS.versus}` ({kind})", f"`{ARGS.gatehouse}` ({kind})"]
    else:
        pair = [start_subject("nginx", upstream.port), start_subject("gatehouse", upstream.port)]
        names = ["nginx", "Gatehouse"]
    try:
        results["headtohead"] = {"names": names, **head_to_head(pair, "head-to-head")}
    finally:
        for s in pair:
            stop(s.proc)
    results["headtohead_params"] = {"reps": ARGS.reps, "duration_s": ARGS.duration,
                                    "connections_each": results["headtohead"]["connections_each"]}


def section_profile(upstream, results):
    """Where the server's core spends its time under load: `perf record -e cpu-clock` (a
    timer, so it works without a PMU and counts cache misses and stalls as time, which an
    instruction count cannot) on the server's core while wrk saturates the subject. Samples
    become microseconds per request, split into user space and kernel, per symbol."""
    freq = 4000
    out = {}
    report = TEMPLATES / "report.lua"
    # Not in ARGS.tmp: Gatehouse watches its config file's directory, and perf writing there
    # as it samples would wake that watch (read by the serving thread) on the measured core.
    perf_dir = Path(tempfile.mkdtemp(prefix="gatehouse-perf-"))
    atexit.register(shutil.rmtree, perf_dir, True)
    for kind in [k for k in ARGS.instr_subjects if k != "direct"]:
        s = start_subject(kind, upstream.port)
        wrk(s.url, 2, ARGS.connections, [report], headers=s.headers)
        data = perf_dir / f"perf-{kind}.data"
        perf = start(["taskset", "-c", CLIENT_CORE, "perf", "record", "-q", "-e", "cpu-clock", "-F", str(freq),
                      "-C", SERVER_CORE, "-o", data], f"perf-record:{kind}", stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        d = wrk(s.url, ARGS.duration, ARGS.connections, [report], headers=s.headers)
        os.kill(perf.pid, signal.SIGINT)
        perf.wait(timeout=60)
        STARTED.remove(perf)
        stop(s.proc)
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "-n", "--no-children", "--sort",
                              "comm,dso,sym", "--percent-limit", "0"], capture_output=True, text=True,
                             timeout=300).stdout
        us_per_sample = 1e6 / freq / d["requests"]
        # The serving thread only (the chain's access-log writer thread counts as other).
        mine = "nginx" if kind == "nginx" else "gatehouse"
        user = kernel = other = 0.0
        syms = []
        for line in rep.splitlines():
            # `  12.34%  1234  comm  dso  [k] symbol`
            m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)", line)
            if not m:
                continue
            n, comm, dso, mode, sym = int(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5).strip()
            us = n * us_per_sample
            if comm != mine:
                other += us  # other threads, softirq in swapper, kworkers
                continue
            if mode == "k":
                kernel += us
            else:
                user += us
            syms.append((us, mode, dso.split("/")[-1], sym))
        syms.sort(reverse=True)
        top = [x for x in syms if x[1] != "k"][:15] + [x for x in syms if x[1] == "k"][:10]
        out[kind] = {"user_us": user, "kernel_us": kernel, "other_us": other, "rps": d["rps"],
                     "top": [{"us": round(u, 3), "mode": m, "dso": o, "sym": y[:90]} for u, m, o, y in top]}
        (Path(ARGS.out) / f"perf-{kind}.txt").write_text(rep)
        log(f"profile {kind:16} user {user:.2f} us/req  kernel {kernel:.2f}  other on its core {other:.2f}  "
            f"({d['rps']:.0f} req/s)")
        for u, m, o, y in top:
            log(f"    {u:6.3f} us  [{m}] {o:20.20} {y[:80]}")
    results["profile"] = out
    results["profile_params"] = {"freq_hz": freq, "duration_s": ARGS.duration}


def section_routes(upstream, results):
    """Throughput with 1, 100 and 10,000 routes (must stay flat). Each larger table runs head
    to head with the 1-route gateway (both on the server core at once, see
    section_headtohead): in separate runs this machine's req/s drifts by more than the 5 %
    this section looks for (one full run: 26k to 49k req/s for the same 1-route gateway)."""
    first, rest = ARGS.route_counts[0], ARGS.route_counts[1:]
    subjects = {n: start_gatehouse(f"gatehouse-{n}routes", upstream.port, routes=n) for n in ARGS.route_counts}
    out = {str(n): {} for n in subjects}
    try:
        first_rps = []
        for n in rest:
            h = head_to_head([subjects[first], subjects[n]], f"routes {first} vs {n}")
            first_rps += [r["a"]["rps"] for r in h["reps"]]
            out[str(n)].update({"rps_median": h["b_rps_median"], "vs_first": h["rps_ratio_median"],
                                "vs_first_min": h["rps_ratio_min"], "vs_first_max": h["rps_ratio_max"],
                                "cpu_vs_first": h["cpu_ratio_median"], "errors": h["errors"]})
        out[str(first)].update({"rps_median": statistics.median(first_rps) if first_rps else None,
                                "vs_first": 1.0, "cpu_vs_first": 1.0})
        for n, s in subjects.items():
            out[str(n)]["rss_kib"] = mem_kib(s.proc.pid)["VmRSS"]
    finally:
        for s in subjects.values():
            stop(s.proc)
    # The second check, free of timing: whether the instructions per request (callgrind)
    # grow with the number of routes.
    if ARGS.counter == "callgrind":
        cg_dir = Path(ARGS.out) / "callgrind"
        cg_dir.mkdir(parents=True, exist_ok=True)
        for n in ARGS.route_counts:
            c = callgrind_count(f"routes-{n}", lambda wrap, n=n: start_gatehouse(
                f"gatehouse-{n}routes-cg", upstream.port, routes=n, wrap=wrap), cg_dir, profile=False)
            out[str(n)]["instr_user"] = c["user"]
    results["routes"] = out


def section_idle(upstream, results):
    """RSS per idle keep-alive connection (each has served one request), vs nginx."""
    out = {}
    for kind in ("nginx", "gatehouse"):
        s = start_subject(kind, upstream.port)
        h2load(s.url, 2000, 16)
        time.sleep(0.5)
        before = mem_kib(s.proc.pid)["VmRSS"]
        holder = start([sys.executable, BENCH / "idle_conns.py", "--port", s.port, "--count", ARGS.idle_conns,
                        "--hold", "120"], f"idle-holder:{kind}", stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        line = holder.stdout.readline().decode().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"idle holder failed: {line}")
        opened, failed = int(line[1]), int(line[2])
        # Sampled each second while the connections stay idle; the last sample is the steady
        # state (Gatehouse parks idle connections after 1 s, and the allocator returns freed
        # pages to the OS after its purge delay).
        samples = []
        for _ in range(ARGS.idle_settle):
            time.sleep(1)
            samples.append(mem_kib(s.proc.pid)["VmRSS"])
        after = mem_kib(s.proc.pid)
        per = (after["VmRSS"] - before) / max(opened, 1)
        log(f"idle {kind:10} {opened} open ({failed} failed): RSS {before} -> {after['VmRSS']} KiB, {per:.2f} KiB/conn "
            f"(samples {samples})")
        out[kind] = {"opened": opened, "failed": failed, "rss_before_kib": before, "rss_samples_kib": samples,
                     "rss_after_kib": after["VmRSS"], "kib_per_conn": per}
        holder.stdin.close()
        stop(holder)
        stop(s.proc)
    results["idle"] = out


def section_reload(upstream, results):
    """Startup and reload time of a 10,000-route file, and the memory it takes."""
    n = ARGS.reload_routes
    t0 = time.time()
    s = start_gatehouse(f"gatehouse-reload-{n}", upstream.port, routes=n)
    startup = time.time() - t0
    rss0 = mem_kib(s.proc.pid)
    times = []
    for i in range(ARGS.reload_reps):
        variant = "b" if i % 2 == 0 else "a"
        tmp = Path(str(s.config) + ".new")
        gatehouse_yaml("reload-tmp", s.port, s.admin_port, upstream.port, routes=n, variant=variant).rename(tmp)
        os.replace(tmp, s.config)
        req = urllib.request.Request(f"http://127.0.0.1:{s.admin_port}/reload", method="POST")
        t1 = time.time()
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"reload failed: {r.status} {body[:200]}")
        dt = time.time() - t1
        times.append(dt)
        log(f"reload {i + 1}: {dt * 1000:.0f} ms")
        # The file watcher sees the same change and re-reads it (a no-op: same version);
        # let it finish before the next measurement.
        time.sleep(max(1.0, 3 * dt))
        wait_http_ok(s.url, s.proc)
    rss1 = mem_kib(s.proc.pid)
    results["reload"] = {"routes": n, "startup_s": startup, "reload_s_median": statistics.median(times),
                         "reload_s_runs": times, "rss_after_start_kib": rss0["VmRSS"],
                         "rss_after_reloads_kib": rss1["VmRSS"], "peak_rss_kib": rss1["VmHWM"]}
    stop(s.proc)


# ---------------------------------------------------------------- summary


def fmt_int(x):
    return "n/a" if x is None else f"{x:,.0f}"


def mib(kib):
    return f"{kib / 1024:.1f}"


LABELS = {
    "direct": "upstream direct (nginx `return 200`)",
    "nginx": "nginx reverse proxy (1 worker, keep-alive)",
    "gatehouse": "Gatehouse, 1 worker (access log off, metrics on)",
    "gatehouse-chain": "Gatehouse chain: RS256 JWT + local rate limit + metrics + access log",
}


def table(title, head, rows):
    """A markdown section: `title` (with its `#`s), then the table; `head` is (name, align)
    pairs, align `l` or `r`."""
    return [f"{title}\n", "| " + " | ".join(n for n, _ in head) + " |",
            "|" + "|".join("---:" if a == "r" else "---" for _, a in head) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def summary(results):
    L = []
    L.append(f"# Gatehouse benchmark: {results['label']}\n")
    L.append(f"{results['started']} · {results['machine']} · mode `{results['mode']}` · "
             f"gatehouse `{results['gatehouse_commit']}`\n")
    L.append(f"Pinned: server under test on core {SERVER_CORE}; wrk/h2load and the upstream on core {CLIENT_CORE}. "
             "Loopback, HTTP/1.1 keep-alive.\n")
    lo = results.get("link_order")
    if lo:
        L.append(f"Link order (`gatehouse/hot-functions.txt`): {lo['found']} of {lo['listed']} listed functions "
                 "found in the binary" + (" (**stale**: regenerate with `--hot-functions`, then rebuild)"
                                          if lo["found"] < 0.9 * lo["listed"] else "") + ".\n")
    tp = results.get("throughput", {})
    ins = results.get("instructions", {})
    if tp or ins:
        p = results.get("throughput_params", {})
        ip = results.get("instructions_params", {})
        L.append("## Per subject\n")
        L.append(f"req/s: median of {p.get('reps')} interleaved runs of {p.get('duration_s')} s, wrk 1 thread, "
                 f"{p.get('connections')} connections. Ratio: to the direct upstream in the same repetition (median). "
                 "CPU µs/req: user + system time of the server's processes over those runs, per request (median; "
                 "user time alone in brackets); "
                 "core busy: that time over the run's wall time (100% = its core saturated). "
                 f"Latency: wrk paced at ~{p.get('lat_rate')} req/s ({p.get('lat_conns')} connections), median of "
                 f"{p.get('lat_duration_s')} s runs. Instructions: {ip.get('counter', 'n/a')}, "
                 f"{ip.get('requests')} requests after {ip.get('warmup')} warm-up, idle baseline subtracted; "
                 + ("**user space only** (no PMU in this VM, so no kernel count).\n" if ip.get("counter") == "callgrind" else "\n"))
        L.append("| subject | req/s | ratio to direct | CPU µs/req (user) | core busy | p50 µs | p99 µs | rate req/s | instr/req user | instr/req kernel | peak RSS MiB | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k in ("direct", "nginx", "gatehouse", "gatehouse-chain"):
            t = tp.get(k)
            i = ins.get(k, {})
            if not t and not i:
                continue
            t = t or {}
            L.append(f"| {LABELS[k]} | {fmt_int(t.get('rps_median'))} | "
                     f"{t['ratio_median']:.3f} | {t.get('cpu_us_median', 0):.2f} ({t.get('user_us_median', 0):.2f}) | {t.get('busy_median', 0) * 100:.0f}% | "
                     if t else f"| {LABELS[k]} | n/a | n/a | n/a | n/a | ")
            if t:
                L[-1] += (f"{t['p50_us']:.0f} | {t['p99_us']:.0f} | {t['rate']:.0f} | ")
            else:
                L[-1] += "n/a | n/a | n/a | "
            L[-1] += (f"{fmt_int(i.get('user'))} | {fmt_int(i.get('kernel'))} | "
                      f"{mib(t['peak_rss_kib']) if t else 'n/a'} | {t.get('errors', 'n/a')} |")
        L.append("")
    if results.get("throughput_paired"):
        L += table("### Against nginx, repetition by repetition",
                   [("subject", "l"), ("req/s ÷ nginx's (median)", "r"), ("ahead of nginx in", "r"),
                    ("CPU/request ÷ nginx's (median)", "r"), ("per repetition", "l")],
                   [(LABELS[k], f"{r['rps_ratio_median']:.3f}", f"{r['ahead']} of {r['reps']}",
                     f"{r['cpu_ratio_median']:.3f}", ", ".join(f"{x:.2f}" for x in r["rps_ratios"]))
                    for k, r in results["throughput_paired"].items()])
    if "headtohead" in results:
        h, hp = results["headtohead"], results["headtohead_params"]
        na, nb = h["names"]
        L += table(f"### Head to head: A and B on core {SERVER_CORE} at once, "
                   f"{hp['connections_each']} connections each, {hp['reps']} runs of {hp['duration_s']} s",
                   [("", "l"), (f"A: {na}", "r"), (f"B: {nb}", "r"), ("B ÷ A", "r")],
                   [("req/s (median)", fmt_int(h["a_rps_median"]), fmt_int(h["b_rps_median"]),
                     f"**{h['rps_ratio_median']:.3f}** (runs {h['rps_ratio_min']:.3f}–{h['rps_ratio_max']:.3f}; "
                     f"B ahead in {h['ahead']} of {len(h['reps'])})"),
                    ("CPU µs/request (median)", f"{h['a_cpu_us_median']:.2f}", f"{h['b_cpu_us_median']:.2f}",
                     f"**{h['cpu_ratio_median']:.3f}** (below 1 in {h['cpu_ratio_below_1']} of {len(h['reps'])})"),
                    ("of which user space", f"{h['a_user_us_median']:.2f}", f"{h['b_user_us_median']:.2f}",
                     f"{h['b_user_us_median'] / h['a_user_us_median']:.3f}"),
                    ("CPU ratio per run", "", "", ", ".join(f"{r['cpu_ratio']:.3f}" for r in h["reps"])),
                    ("errors (both)", "", "", str(h.get("errors", "n/a")))])
    if "profile" in results:
        pr = results["profile"]
        L += table(f"## Time on the server's core (perf record -e cpu-clock at {results['profile_params']['freq_hz']} Hz, "
                   "under wrk, µs per request)",
                   [("subject", "l"), ("user", "r"), ("kernel", "r"), ("largest in user space", "l")],
                   [(LABELS[k], f"{r['user_us']:.2f}", f"{r['kernel_us']:.2f}",
                     ", ".join(f"`{t['sym'][:48]}` {t['us']:.2f}" for t in r["top"] if t["mode"] != "k")[:400])
                    for k, r in pr.items()])
    if "syscalls" in results:
        def segs(r):
            v = r.get("segments", {}).get("out_segs")
            return "n/a" if v is None else f"{v:.2f}"
        L += table(f"## System calls per request (strace -f -c, {results['syscalls_params']['requests']} requests)",
                   [("subject", "l"), ("syscalls/request", "r"), ("largest", "l"),
                    ("TCP segments/request (loopback, all parties)", "r")],
                   [(LABELS[k], f"{r['per_request']:.2f}", ", ".join(f"{n} {c:.2f}" for n, c in r["top"].items()),
                     segs(r)) for k, r in results["syscalls"].items()])
    if "routes" in results:
        def rng(r):
            return f" ({r['vs_first_min'] * 100:.1f}–{r['vs_first_max'] * 100:.1f}%)" if "vs_first_min" in r else ""

        L += table(f"## Route scale (Gatehouse, access log off; each table head to head with the 1-route "
                   f"gateway on core {SERVER_CORE}, {ARGS.reps} runs of {ARGS.duration} s)",
                   [("routes", "r"), ("req/s (median, sharing the core)", "r"), ("req/s vs 1 route", "r"),
                    ("CPU/request vs 1 route", "r"), ("instr/req user", "r"), ("RSS MiB", "r")],
                   [(f"{int(n):,}", fmt_int(r.get("rps_median")), f"{r['vs_first'] * 100:.1f}%{rng(r)}",
                     f"{r.get('cpu_vs_first', 1.0):.3f}", fmt_int(r.get("instr_user")), mib(r["rss_kib"]))
                    for n, r in results["routes"].items()])
    if "idle" in results:
        ng = results["idle"].get("nginx", {}).get("kib_per_conn")
        L += table(f"## Idle keep-alive connections (each served one request, then idle {ARGS.idle_settle} s)",
                   [("server", "l"), ("connections", "r"), ("RSS before MiB", "r"), ("RSS after MiB", "r"),
                    ("KiB per connection", "r"), ("vs nginx", "r")],
                   [(k, f"{r['opened']:,}", mib(r["rss_before_kib"]), mib(r["rss_after_kib"]),
                     f"{r['kib_per_conn']:.2f}", f"{r['kib_per_conn'] / ng:.2f}x" if ng else "n/a")
                    for k, r in results["idle"].items()])
    if "reload" in results:
        r = results["reload"]
        L += table(f"## {r['routes']:,}-route file",
                   [("startup to first 200 s", "r"), ("reload (POST /reload) ms, median", "r"),
                    ("RSS after start MiB", "r"), ("RSS after reloads MiB", "r"), ("peak RSS MiB", "r")],
                   [(f"{r['startup_s']:.2f}", f"{r['reload_s_median'] * 1000:.0f}", mib(r["rss_after_start_kib"]),
                     mib(r["rss_after_reloads_kib"]), mib(r["peak_rss_kib"]))])
    return "\n".join(L)


# ---------------------------------------------------------------- main


def has_pmu():
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "instructions:u", "true"], capture_output=True, text=True)
    return r.returncode == 0 and "<not supported>" not in r.stderr and "<not counted>" not in r.stderr


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (minutes, not tens of minutes)")
    ap.add_argument("--gatehouse", default=str(ROOT / "target/release/gatehouse"))
    ap.add_argument("--out", default=str(BENCH / "out"))
    ap.add_argument("--label", default="run")
    ap.add_argument("--sections", default="throughput,headtohead,profile,instructions,syscalls,routes,idle,reload")
    ap.add_argument("--instr-subjects", default="direct,nginx,gatehouse,gatehouse-chain")
    ap.add_argument("--counter", choices=["auto", "perf", "callgrind"], default="auto")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=1000, help="fixed request rate for latency")
    ap.add_argument("--lat-conns", type=int, default=10)
    ap.add_argument("--lat-duration", type=int)
    ap.add_argument("--lat-reps", type=int)
    ap.add_argument("--instr-requests", type=int)
    ap.add_argument("--instr-warmup", type=int)
    ap.add_argument("--instr-conns", type=int, default=8, help="keep-alive connections for the instruction count")
    ap.add_argument("--cache-sim", action="store_true",
                    help="callgrind also simulates caches and branches (the dumps' totals: misses per request)")
    ap.add_argument("--dump-instr", action="store_true",
                    help="callgrind costs per instruction address (for bench/cg_lines.py)")
    ap.add_argument("--hot-functions", action="store_true",
                    help="write gatehouse/hot-functions.txt (the release binary's link order) from the callgrind "
                         "dumps of gatehouse and gatehouse-chain (section instructions; implies --counter callgrind)")
    ap.add_argument("--versus", metavar="BINARY",
                    help="section headtohead: this Gatehouse binary (A) against --gatehouse (B) instead of nginx "
                         "against Gatehouse, e.g. `--sections headtohead --versus /tmp/gatehouse-before`")
    ap.add_argument("--versus-subject", choices=["gatehouse", "gatehouse-chain"], default="gatehouse",
                    help="with --versus: both binaries as the plain proxy or as the realistic chain")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--idle-settle", type=int, default=5, help="seconds idle before RSS is read")
    ap.add_argument("--reload-routes", type=int, default=10000)
    ap.add_argument("--reload-reps", type=int, default=3)
    ap.add_argument("--route-counts", default="1,100,10000")
    ARGS = ap.parse_args()
    q = ARGS.quick
    # Many short interleaved repetitions rather than a few long ones: this VM's speed drifts
    # by ±15 % from one run to the next (bench/RESULTS.md, round 9), so the medians (and the
    # pairs with nginx) need numbers more than length.
    ARGS.reps = ARGS.reps or (5 if q else 15)
    ARGS.duration = ARGS.duration or 4
    ARGS.lat_duration = ARGS.lat_duration or (4 if q else 10)
    ARGS.lat_reps = ARGS.lat_reps or (1 if q else 3)
    ARGS.instr_requests = ARGS.instr_requests or (3000 if q else 20000)
    ARGS.instr_warmup = ARGS.instr_warmup or (300 if q else 1000)
    ARGS.route_counts = [int(x) for x in ARGS.route_counts.split(",")]
    ARGS.instr_subjects = ARGS.instr_subjects.split(",")
    sections = ARGS.sections.split(",")
    if ARGS.hot_functions:
        ARGS.counter = "callgrind"
    if ARGS.counter == "auto":
        ARGS.counter = "perf" if has_pmu() else "callgrind"
    ARGS.tmp = tempfile.mkdtemp(prefix="gatehouse-bench-")
    global JWT_PUB, JWT
    JWT_PUB, JWT = make_jwt()
    Path(ARGS.out).mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except Exception:  # noqa: BLE001 - informational only
        pass
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    results = {
        "label": ARGS.label,
        "mode": "quick" if q else "full",
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, {nginx_v}",
        "gatehouse_commit": commit,
        "link_order": hot_functions.matched(ROOT / "gatehouse/hot-functions.txt", ARGS.gatehouse),
    }
    json_path = Path(ARGS.out) / f"results-{ARGS.label}.json"
    upstream = start_upstream()
    try:
        for sec in sections:
            log(f"== {sec}")
            globals()[f"section_{sec}"](upstream, results)
            json_path.write_text(json.dumps(results, indent=2))
    finally:
        stop(upstream.proc)
        shutil.rmtree(ARGS.tmp, ignore_errors=True)
    md = summary(results)
    (Path(ARGS.out) / "summary.md").write_text(md)
    (Path(ARGS.out) / f"summary-{ARGS.label}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
