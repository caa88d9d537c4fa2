#!/usr/bin/env bash
# Gatehouse vs nginx on loopback: one command (see README "Benchmarks").
#
#   bench/run.sh            full run (~15 min on 2 cores)
#   bench/run.sh --quick    short runs (~8 min)
#   bench/run.sh --quick --sections throughput,instructions --label after
#   bench/run.sh --sections headtohead --versus /tmp/gatehouse-before   (old binary vs new, same core)
#
# Installs what it needs from Debian's packages when missing (nginx, wrk, nghttp2-client for
# h2load, valgrind, strace, openssl for the chain's RS256 token; linux-perf when available), builds
# the release binary, then runs bench/harness.py, which writes bench/out/summary.md (and
# results-LABEL.json, callgrind profiles). Every flag is passed to the harness:
# `bench/harness.py --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # perf is optional: without a PMU (most VMs) the harness counts with callgrind instead.
  command -v perf >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq linux-perf >/dev/null 2>&1 || true
fi

if [ -z "${GATEHOUSE_BENCH_NO_BUILD:-}" ]; then
  echo "==> cargo build --release -p gatehouse"
  cargo build --release -p gatehouse
fi

# 10,000 idle connections need as many descriptors in the server and in the holder.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/harness.py "$@"
