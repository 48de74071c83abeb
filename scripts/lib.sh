# Shell helpers shared by cluster.sh, chaos-demo.sh and bench.sh (sourced).
# A local cluster is node1..node3 with Raft ports RAFT_BASE+N and client
# ports CLIENT_BASE+N on localhost; only bash is needed to talk to it.

# ask PORT LINE: one request over bash's /dev/tcp; prints the reply line.
ask() {
    local port=$1 line=$2 reply
    # Braces, so that a refused connection says nothing: the redirection fails before a 2> on exec applies.
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf '%s\n' "$line" >&3
    IFS= read -r -t 6 reply <&3 || { exec 3<&-; return 1; }
    exec 3<&-
    printf '%s\n' "${reply%$'\r'}"
}

# start_node BIN ID RAFT_BASE CLIENT_BASE DATA [flags...]: starts node ID of
# the 3-node cluster in the background; its pid goes to DATA/ID.pid and its
# output to DATA/ID.log.
start_node() {
    local bin=$1 id=$2 raft_base=$3 client_base=$4 data=$5 peers=() n
    shift 5
    for n in 1 2 3; do
        [[ node$n == "$id" ]] || peers+=("node$n:localhost:$((raft_base + n)):$((client_base + n))")
    done
    mkdir -p "$data"
    "$bin" --id "$id" --port $((raft_base + ${id#node})) --client-port $((client_base + ${id#node})) \
        --advertise-client-addr "localhost:$((client_base + ${id#node}))" \
        --peers "$(IFS=,; echo "${peers[*]}")" --data-dir "$data/$id" "$@" \
        >>"$data/$id.log" 2>&1 &
    echo $! >"$data/$id.pid"
}

# leader_port CLIENT_BASE: the client port of the node that says it leads.
leader_port() {
    local n reply
    for n in 1 2 3; do
        reply=$(ask $(($1 + n)) STATUS) || continue
        [[ $reply == *" role=leader "* ]] && { echo $(($1 + n)); return 0; }
    done
    return 1
}

# wait_leader_port CLIENT_BASE [SECONDS]: leader_port, polled until a deadline.
wait_leader_port() {
    local deadline=$((SECONDS + ${2:-20}))
    while ((SECONDS < deadline)); do
        leader_port "$1" && return 0
        sleep 0.1
    done
    return 1
}
