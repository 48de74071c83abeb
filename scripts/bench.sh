#!/usr/bin/env bash
# Benchmarks a local 3-node cluster (release build, loopback, fsync on) with
# the workloads of the spec's performance table, after measuring this
# machine's floor for a replicated write (`titanstore-bench --floor`: 2
# loopback round trips + 1 fdatasync, on the filesystem of the data dirs).
# With --vs-etcd, the same rows also run, with the same load generator,
# against a fresh local 3-member etcd cluster (fsync on, as etcd defaults),
# one cluster at a time, and a table gives both and the ratio TitanStore/etcd.
# Not a test: numbers depend on the machine; run it on a quiet one.
#
#   scripts/bench.sh [--vs-etcd] [seconds per workload]    (default 5)
#
# Environment: BENCH_SECS   seconds per workload (the argument wins)
#              TITANSTORE_BIN_DIR  take titanstore-server and titanstore-bench
#                           from there instead of building them (release)
#              ETCD         the etcd binary (default: etcd on PATH)
#              TITANSTORE_FLAGS  extra flags for every node, e.g.
#                           "--read-mode lease"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() { sed -n '2,19s/^# \{0,1\}//p' "$0"; }
VS_ETCD=0
SECS=${BENCH_SECS:-5}
for arg in "$@"; do
    case $arg in
        --vs-etcd) VS_ETCD=1 ;;
        -h | --help) usage; exit 0 ;;
        *[!0-9.]* | '') echo "bench.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
        *) SECS=$arg ;;
    esac
done
[[ $SECS =~ ^[0-9]*\.?[0-9]+$ && ! $SECS =~ ^0*\.?0*$ ]] || {
    echo "bench.sh: seconds per workload must be a positive number, not '$SECS'" >&2
    exit 2
}
ETCD=${ETCD:-etcd}
if ((VS_ETCD)) && ! command -v "$ETCD" >/dev/null; then
    echo "bench.sh: --vs-etcd needs etcd ('$ETCD' not found)." >&2
    echo "Install it with: apt-get install etcd-server   (or set ETCD=/path/to/etcd)" >&2
    exit 1
fi

if [[ -n ${TITANSTORE_BIN_DIR:-} ]]; then
    BIN_DIR=$TITANSTORE_BIN_DIR
else
    cargo build --release --quiet -p titanstore-core --bins
    BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
BIN=$BIN_DIR/titanstore-server
BENCH=$BIN_DIR/titanstore-bench
for exe in "$BIN" "$BENCH"; do
    [[ -x $exe ]] || { echo "bench.sh: no executable $exe" >&2; exit 1; }
done

DIR=$(mktemp -d "${TMPDIR:-/tmp}/titanstore-bench.XXXXXX")
# stop PIDFILE...: SIGTERM to each process, SIGKILL to any still there after 10 s.
stop() {
    local pidfile pid pids=() deadline=$((SECONDS + 10))
    for pidfile in "$@"; do
        [[ -f $pidfile ]] || continue
        pid=$(<"$pidfile")
        rm -f "$pidfile"
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    stop "$DIR"/*/*.pid
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The rows: label|titanstore-bench arguments.
ROWS=(
    "1 client, writes|--clients 1"
    "64 clients, writes|--clients 64"
    "256 clients x pipeline 16|--clients 256 --pipeline 16"
    "64 clients, 90% linearizable reads|--clients 64 --read-ratio 0.9"
)

# Measured first, while nothing else runs, on the data dirs' filesystem.
IFS=, read -r FSYNC_P50 _ RTT_P50 _ FLOOR < <("$BENCH" --floor --csv --data-dir "$DIR")

# start_titanstore: a fresh 3-node cluster, data under $DIR/titanstore; sets LEADER.
start_titanstore() {
    local id port
    for id in node1 node2 node3; do
        # shellcheck disable=SC2086  # TITANSTORE_FLAGS is a list of flags
        start_node "$BIN" "$id" 7000 7100 "$DIR/titanstore" --log warn ${TITANSTORE_FLAGS:-}
    done
    port=$(wait_leader_port 7100 20) || {
        echo "bench.sh: the TitanStore cluster elected no leader; its logs:" >&2
        tail -n 20 "$DIR"/titanstore/*.log >&2
        exit 1
    }
    LEADER="127.0.0.1:$port"
}

ETCD_CLIENT=7200 ETCD_PEER=7300
# start_etcd: a fresh 3-member etcd cluster on loopback, data under $DIR/etcd.
start_etcd() {
    local n cluster=
    for n in 1 2 3; do cluster+="${cluster:+,}etcd$n=http://127.0.0.1:$((ETCD_PEER + n))"; done
    mkdir -p "$DIR/etcd"
    for n in 1 2 3; do
        "$ETCD" --name "etcd$n" --data-dir "$DIR/etcd/etcd$n" \
            --listen-client-urls "http://127.0.0.1:$((ETCD_CLIENT + n))" \
            --advertise-client-urls "http://127.0.0.1:$((ETCD_CLIENT + n))" \
            --listen-peer-urls "http://127.0.0.1:$((ETCD_PEER + n))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PEER + n))" \
            --initial-cluster "$cluster" --initial-cluster-token titanstore-bench \
            --initial-cluster-state new --logger zap --log-level warn \
            >>"$DIR/etcd/etcd$n.log" 2>&1 &
        echo $! >"$DIR/etcd/etcd$n.pid"
    done
}

# http_post PORT PATH BODY: one HTTP/1.0 request over bash's /dev/tcp; prints the reply.
http_post() {
    local port=$1 path=$2 body=$3 line
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'POST %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
        "$path" "$port" "${#body}" "$body" >&3
    while IFS= read -r -t 6 line <&3 || [[ -n $line ]]; do printf '%s\n' "$line"; line=; done
    exec 3<&-
}

# etcd_leader_port: the client port of the member whose status says it leads.
etcd_leader_port() {
    local n reply me re_me='"member_id":"([0-9]+)"' re_leader='"leader":"([0-9]+)"'
    for n in 1 2 3; do
        reply=$(http_post $((ETCD_CLIENT + n)) /v3/maintenance/status '{}') || continue
        [[ $reply =~ $re_me ]] || continue
        me=${BASH_REMATCH[1]}
        [[ $reply =~ $re_leader ]] || continue
        [[ ${BASH_REMATCH[1]} == "$me" ]] && { echo $((ETCD_CLIENT + n)); return 0; }
    done
    return 1
}

wait_etcd_leader() {
    local deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
        etcd_leader_port && return 0
        sleep 0.2
    done
    echo "bench.sh: the etcd cluster elected no leader; its logs:" >&2
    tail -n 20 "$DIR"/etcd/*.log >&2
    return 1
}

# ratio A B: A/B to two decimals, or - when B is not a positive number.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a / b; else printf "-" }'; }

if ((!VS_ETCD)); then
    start_titanstore
    echo "leader at $LEADER; $SECS s per workload; every OK is fsynced on a majority"
    p50=
    for row in "${ROWS[@]}"; do
        # The arguments are words on purpose.
        # shellcheck disable=SC2086
        line=$("$BENCH" --addr "$LEADER" --duration "$SECS" ${row#*|})
        echo "$line"
        [[ -z $p50 && $line =~ p50\ ([0-9.]+)\ ms ]] && p50=${BASH_REMATCH[1]}
    done
    echo "floor: 2 loopback round trips ($RTT_P50 ms each) + 1 fdatasync ($FSYNC_P50 ms) = $FLOOR ms;" \
        "1 client p50 / floor = $(ratio "${p50:-}" "$FLOOR")"
    exit 0
fi

# run_rows SYSTEM ADDR BENCH-ARGS...: every row against one cluster, results
# (ops/s,p50,p99,p99.9,errors or "failed") into RESULTS_<SYSTEM>.
FAILED=0
RESULTS_titanstore=() RESULTS_etcd=()
run_rows() {
    local system=$1 addr=$2 row out
    shift 2
    local -n results=RESULTS_$system
    results=()
    for row in "${ROWS[@]}"; do
        echo "  $system: ${row%%|*}" >&2
        # shellcheck disable=SC2086
        if ! out=$("$BENCH" "$@" --addr "$addr" --duration "$SECS" --csv ${row#*|}); then
            out=failed
            FAILED=1
        fi
        results+=("$out")
    done
}

echo "$SECS s per workload (+1 s warm-up); every acknowledged write is fsynced on a majority (both systems)"
start_titanstore
echo "TitanStore: 3 nodes, leader at $LEADER" >&2
run_rows titanstore "$LEADER"
stop "$DIR"/titanstore/*.pid

start_etcd
eport=$(wait_etcd_leader)
echo "$("$ETCD" --version | head -n 1): 3 members, leader at 127.0.0.1:$eport" >&2
# The leader, as for TitanStore: a follower would add a forwarding hop.
run_rows etcd "127.0.0.1:$eport" --target etcd
stop "$DIR"/etcd/*.pid

echo
printf '%-36s | %-26s | %-26s | %s\n' "" "TitanStore" "etcd" "TitanStore / etcd"
printf '%-36s | %10s %7s %7s | %10s %7s %7s | %6s %6s %7s | %s\n' \
    workload ops/s "p50 ms" "p99 ms" ops/s "p50 ms" "p99 ms" ops/s p50 p99 errors
for i in "${!ROWS[@]}"; do
    IFS=, read -r t_ops t_p50 t_p99 _ t_err <<<"${RESULTS_titanstore[i]}"
    IFS=, read -r e_ops e_p50 e_p99 _ e_err <<<"${RESULTS_etcd[i]}"
    printf '%-36s | %10s %7s %7s | %10s %7s %7s | %6s %6s %7s | %s\n' "${ROWS[i]%%|*}" \
        "$t_ops" "${t_p50:--}" "${t_p99:--}" "$e_ops" "${e_p50:--}" "${e_p99:--}" \
        "$(ratio "$t_ops" "$e_ops")" "$(ratio "${t_p50:-}" "${e_p50:-}")" \
        "$(ratio "${t_p99:-}" "${e_p99:-}")" "${t_err:--} / ${e_err:--}"
done
IFS=, read -r _ t_p50 _ <<<"${RESULTS_titanstore[0]}"
IFS=, read -r _ e_p50 _ <<<"${RESULTS_etcd[0]}"
echo "floor: 2 loopback round trips ($RTT_P50 ms each) + 1 fdatasync ($FSYNC_P50 ms) = $FLOOR ms;" \
    "1 client p50 / floor: TitanStore $(ratio "${t_p50:-}" "$FLOOR"), etcd $(ratio "${e_p50:-}" "$FLOOR")"
exit "$FAILED"
