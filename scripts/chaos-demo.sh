#!/usr/bin/env bash
# Chaos demo: a writer runs while the leader is killed (SIGKILL) and restarted
# in a loop; at the end every acknowledged write is read back from every node.
#
#   scripts/chaos-demo.sh [rounds]      (default 5 rounds)
#
# Uses its own data dir (./data/chaos) and the default ports 5001-5003/6001-6003.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-5}
export TITANSTORE_DATA=./data/chaos
rm -rf "$TITANSTORE_DATA"
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start >/dev/null
BIN=${TITANSTORE_BIN:-./target/release/titanstore-server}
echo "cluster up; running $ROUNDS rounds of leader kills"

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
    port=$(leader_port 6000) || { echo "round $round: no leader right now"; continue; }
    id=node$((port - 6000))
    kill -KILL "$(cat "$TITANSTORE_DATA/$id.pid")"
    echo "round $round: killed leader $id after $(wc -l <"$ACKED") acknowledged writes"
    sleep 1
    start_node "$BIN" "$id" 5000 6000 "$TITANSTORE_DATA"
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
