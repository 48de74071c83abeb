#!/usr/bin/env bash
# Chaos demo: a writer runs while the leader is killed (SIGKILL) and restarted
# in a loop; at the end every acknowledged write is read back from every node.
#
#   scripts/chaos-demo.sh [rounds]      (default 5 rounds)
#
# Uses its own data dir (./data/chaos) and the default ports 5001-5003/6001-6003.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
export TITANSTORE_DATA=./data/chaos
rm -rf "$TITANSTORE_DATA"
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start >/dev/null
BIN=${TITANSTORE_BIN:-./target/release/titanstore-server}
echo "cluster up; running $ROUNDS rounds of leader kills"

ask() {
    local port=$1 line=$2 reply
    exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
    printf '%s\n' "$line" >&3
    IFS= read -r -t 6 reply <&3 || { exec 3<&-; return 1; }
    exec 3<&-
    printf '%s\n' "${reply%$'\r'}"
}

leader_port() {
    local port reply
    for port in 6001 6002 6003; do
        reply=$(ask "$port" STATUS) || continue
        [[ $reply == *" role=leader "* ]] && { echo "$port"; return 0; }
    done
    return 1
}

ACKED=$TITANSTORE_DATA/acked.txt
: >"$ACKED"
writer() {
    local i=0 port=6001 reply
    while :; do
        reply=$(ask "$port" "SET chaos:$i v$i") || { port=$((6001 + (port - 6000) % 3)); continue; }
        case $reply in
            OK) echo "$i" >>"$ACKED"; i=$((i + 1)) ;;
            "ERR NOT_LEADER "*) port=${reply##*:} ;;
            *) sleep 0.05 ;;
        esac
    done
}
writer &
WRITER=$!

for round in $(seq "$ROUNDS"); do
    sleep 2
    port=$(leader_port) || { echo "round $round: no leader right now"; continue; }
    id=node$((port - 6000))
    kill -KILL "$(cat "$TITANSTORE_DATA/$id.pid")"
    echo "round $round: killed leader $id after $(wc -l <"$ACKED") acknowledged writes"
    sleep 1
    peers=()
    for p in node1 node2 node3; do
        [[ $p == "$id" ]] || peers+=("$p:localhost:$((5000 + ${p#node})):$((6000 + ${p#node}))")
    done
    "$BIN" --id "$id" --port $((5000 + ${id#node})) --client-port "$port" \
        --advertise-client-addr "localhost:$port" --peers "$(IFS=,; echo "${peers[*]}")" \
        --data-dir "$TITANSTORE_DATA/$id" >>"$TITANSTORE_DATA/$id.log" 2>&1 &
    echo $! >"$TITANSTORE_DATA/$id.pid"
done
kill "$WRITER" 2>/dev/null || true
wait "$WRITER" 2>/dev/null || true

total=$(wc -l <"$ACKED")
echo "writer stopped: $total acknowledged writes; checking every one on every node..."
sleep 1
missing=0
while read -r i; do
    for port in 6001 6002 6003; do
        reply=$(ask "$port" "GET chaos:$i") || reply="(no reply)"
        if [[ $reply != "VALUE v$i" ]]; then
            echo "LOST: chaos:$i on port $port: $reply"
            missing=$((missing + 1))
        fi
    done
done <"$ACKED"
if ((missing == 0)); then
    echo "no acknowledged write lost ($total writes, 3 nodes checked)"
else
    echo "$missing missing reads"
    exit 1
fi
