#!/usr/bin/env bash
# Benchmarks a local 3-node cluster (release build, loopback, fsync on) with
# the workloads of the spec's performance table. Not a test: numbers depend on
# the machine; run it on a quiet one.
#
#   scripts/bench.sh [seconds per workload]     (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
cargo build --release --quiet -p titanstore-core --bins
BIN=./target/release/titanstore-server
BENCH=./target/release/titanstore-bench
DIR=$(mktemp -d "${TMPDIR:-/tmp}/titanstore-bench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

for i in 1 2 3; do
    peers=()
    for j in 1 2 3; do
        [[ $i == "$j" ]] || peers+=("node$j:127.0.0.1:$((7000 + j)):$((7100 + j))")
    done
    "$BIN" --id "node$i" --port $((7000 + i)) --client-port $((7100 + i)) \
        --advertise-client-addr "127.0.0.1:$((7100 + i))" \
        --peers "$(IFS=,; echo "${peers[*]}")" --data-dir "$DIR/node$i" \
        --log warn >"$DIR/node$i.log" 2>&1 &
    PIDS+=($!)
done

leader=""
for _ in $(seq 200); do
    for i in 1 2 3; do
        if exec 3<>"/dev/tcp/127.0.0.1/$((7100 + i))" 2>/dev/null; then
            printf 'STATUS\n' >&3
            IFS= read -r -t 1 reply <&3 || reply=""
            exec 3<&-
            [[ $reply == *" role=leader "* ]] && leader="127.0.0.1:$((7100 + i))"
        fi
    done
    [[ -n $leader ]] && break
    sleep 0.05
done
[[ -n $leader ]] || { echo "no leader"; exit 1; }
echo "leader at $leader; $SECS s per workload; every OK is fsynced on a majority"
run() { "$BENCH" --addr "$leader" --duration "$SECS" "$@"; }
run --clients 1
run --clients 64
run --clients 256 --pipeline 16
run --clients 64 --read-ratio 0.9
