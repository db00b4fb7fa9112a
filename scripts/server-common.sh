# Sourced by the server test scripts: start_server BIN ARGS... starts
# `rkinfer serve` on an ephemeral loopback port, sets SERVER_PID and
# SERVER_ADDR (http://127.0.0.1:PORT), and stops it on exit.
start_server() {
    SERVER_LOG=$(mktemp)
    "$@" 2>"$SERVER_LOG" &
    SERVER_PID=$!
    trap 'kill $SERVER_PID 2>/dev/null || true; rm -f "$SERVER_LOG"' EXIT
    SERVER_ADDR=
    for _ in $(seq 100); do
        SERVER_ADDR=$(grep -o 'http://[0-9.:]*' "$SERVER_LOG" | head -1 || true)
        [ -n "$SERVER_ADDR" ] && return 0
        kill -0 $SERVER_PID 2>/dev/null || { cat "$SERVER_LOG"; return 1; }
        sleep 0.2
    done
    echo "server did not start"
    cat "$SERVER_LOG"
    return 1
}
