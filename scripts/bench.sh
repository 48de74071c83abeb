#!/usr/bin/env bash
# Benchmarks a local 3-node cluster (release build, loopback, fsync on) with
# the workloads of the spec's performance table. Not a test: numbers depend on
# the machine; run it on a quiet one.
#
#   scripts/bench.sh [seconds per workload]     (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SECS=${1:-5}
cargo build --release --quiet -p titanstore-core --bins
BIN=./target/release/titanstore-server
BENCH=./target/release/titanstore-bench
DIR=$(mktemp -d "${TMPDIR:-/tmp}/titanstore-bench.XXXXXX")
cleanup() {
    local pidfile
    for pidfile in "$DIR"/*.pid; do
        [[ -f $pidfile ]] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

for id in node1 node2 node3; do
    start_node "$BIN" "$id" 7000 7100 "$DIR" --log warn
done
port=$(wait_leader_port 7100 20) || { echo "no leader"; exit 1; }
leader="127.0.0.1:$port"
echo "leader at $leader; $SECS s per workload; every OK is fsynced on a majority"
run() { "$BENCH" --addr "$leader" --duration "$SECS" "$@"; }
run --clients 1
run --clients 64
run --clients 256 --pipeline 16
run --clients 64 --read-ratio 0.9
