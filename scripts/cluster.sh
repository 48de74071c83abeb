#!/usr/bin/env bash
# Builds titanstore-server and runs a local 3-node cluster.
#
#   scripts/cluster.sh          foreground: Ctrl-C stops all three nodes
#   scripts/cluster.sh start    background: returns once a leader is elected
#   scripts/cluster.sh stop     stops a background cluster
#   scripts/cluster.sh status   one STATUS line per node
#
# Nodes: node1..node3, Raft ports 5001-5003, client ports 6001-6003,
# data under ./data/nodeN (kept between runs). TITANSTORE_BIN skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DATA=${TITANSTORE_DATA:-./data}
IDS=(node1 node2 node3)
raft_port() { echo $((5000 + ${1#node})); }
client_port() { echo $((6000 + ${1#node})); }

build() {
    if [[ -n "${TITANSTORE_BIN:-}" ]]; then BIN=$TITANSTORE_BIN; return; fi
    echo "building titanstore-server (release)..." >&2
    cargo build --release --quiet -p titanstore-core --bin titanstore-server
    BIN=./target/release/titanstore-server
}

start_nodes() {
    mkdir -p "$DATA"
    for id in "${IDS[@]}"; do
        if [[ -f "$DATA/$id.pid" ]] && kill -0 "$(cat "$DATA/$id.pid")" 2>/dev/null; then
            echo "$id is already running (pid $(cat "$DATA/$id.pid")); run '$0 stop' first" >&2
            exit 1
        fi
    done
    for id in "${IDS[@]}"; do
        start_node "$BIN" "$id" 5000 6000 "$DATA"
    done
}

wait_for_leader() {
    local port
    port=$(wait_leader_port 6000 20) || {
        echo "no leader after 20 s; logs are in $DATA/node*.log" >&2
        return 1
    }
    echo "node$((port - 6000))"
}

stop_nodes() {
    local id pid
    for id in "${IDS[@]}"; do
        [[ -f "$DATA/$id.pid" ]] || continue
        pid=$(cat "$DATA/$id.pid")
        kill -TERM "$pid" 2>/dev/null || true
    done
    for id in "${IDS[@]}"; do
        [[ -f "$DATA/$id.pid" ]] || continue
        pid=$(cat "$DATA/$id.pid")
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$DATA/$id.pid"
    done
}

banner() {
    local leader=$1 id
    echo
    echo "TitanStore: 3 nodes up, leader is $leader (data in $DATA, logs in $DATA/nodeN.log)"
    for id in "${IDS[@]}"; do
        echo "  $id  client localhost:$(client_port "$id")  raft localhost:$(raft_port "$id")"
    done
    echo
    echo "Talk to it:"
    echo "  echo 'SET user:42 {\"name\":\"zen\"}' | nc -N localhost $(client_port "$leader")"
    echo "  echo 'GET user:42' | nc -N localhost 6002"
    echo "  echo 'STATUS' | nc -N localhost 6003"
}

case "${1:-run}" in
    run)
        build
        start_nodes
        trap 'echo; echo "stopping..."; stop_nodes; exit 0' INT TERM
        leader=$(wait_for_leader) || { stop_nodes; exit 1; }
        banner "$leader"
        echo
        echo "Ctrl-C stops all three nodes."
        wait
        ;;
    start)
        build
        start_nodes
        leader=$(wait_for_leader) || { stop_nodes; exit 1; }
        banner "$leader"
        echo
        echo "Stop with: $0 stop"
        ;;
    stop) stop_nodes ;;
    status)
        for id in "${IDS[@]}"; do
            ask "$(client_port "$id")" STATUS 2>/dev/null || echo "$id: down"
        done
        ;;
    *) echo "usage: $0 [run|start|stop|status]" >&2; exit 2 ;;
esac
