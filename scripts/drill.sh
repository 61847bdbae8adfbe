#!/usr/bin/env bash
# The on-call drill: the release server in a scratch directory, load, the leak fault, memory
# pressure, a crash, and at each step the runbooks' own commands with their real output.
# A new engineer learns the runbooks by running it; nothing leaves 127.0.0.1.
#
#   scripts/drill.sh [LEAK_SECONDS]      (default 120; the whole drill takes about 2 min more)
#
# Builds the release binaries first (cargo decides whether anything is stale). Exit 0 when
# every step did what the runbooks say it does; the first step that did not stops the drill.
set -euo pipefail
cd "$(dirname "$0")/.."
leak_seconds="${1:-120}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\n$ %s\n' "$*"; "$@"; }
fail() { echo "drill: $*" >&2; exit 1; }

step "building the release binaries (what users run)"
cargo build --release -q -p dispatch-server -p dispatch-cli --bins
target="${CARGO_TARGET_DIR:-target}"
bin="$(cd "$target/release" && pwd)"
export PATH="$bin:$PATH"

var="$(mktemp -d /tmp/dispatch-drill.XXXXXX)"
token="drill-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    echo
    echo "drill: the var dir is kept for you to explore: $var"
}
trap cleanup EXIT
export DISPATCH_VAR_DIR="$var" NO_COLOR=1

start_server() {
    rm -f "$var/addr"
    dispatch-server --var-dir "$var" --addr 127.0.0.1:0 --addr-file "$var/addr" \
        --admin-token "$token" --symbol-store "$var/symbols" --sample-interval-ms 250 \
        --conversation-memory-interval-ms 1000 "$@" 2>>"$var/server.stderr" &
    server_pid=$!
    for _ in $(seq 1 200); do
        [[ -s "$var/addr" ]] && break
        kill -0 "$server_pid" 2>/dev/null || fail "the server exited at start: $(tail -5 "$var/server.stderr")"
        sleep 0.05
    done
    [[ -s "$var/addr" ]] || fail "no address file after 10 s"
    addr="$(cat "$var/addr")"
    export DISPATCH_ADDR="$addr" DISPATCH_ADMIN_TOKEN="$token"
    api="$(cat "$var/api-token")"
}
turn() { # conversation message -> prints the HTTP status
    curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $api" \
        -H 'content-type: application/json' -H 'accept: text/event-stream' \
        -d "{\"message\": \"$2\"}" "http://$addr/v1/conversations/$1/turns"
}
conversation() {
    curl -s -X POST -H "authorization: Bearer $api" "http://$addr/v1/conversations" |
        sed -E 's/.*"id":"([^"]+)".*/\1/'
}
fault() { # name json
    curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d "$2" "http://$addr/admin/fault/$1"
}
rss_bytes() { curl -s "http://$addr/health" | sed -E 's/.*"memory_pressure":\{[^}]*"bytes":([0-9]+).*/\1/'; }

step "1. the release server, with its limits from flags (on a host: the unit's MemoryHigh/MemoryMax)"
start_server
sleep 1
idle=$(rss_bytes)
soft=$((idle + 256 * 1024 * 1024))
hard=$((idle + 640 * 1024 * 1024))
kill -TERM "$server_pid"; wait "$server_pid" || true
start_server --memory-soft-bytes "$soft" --memory-hard-bytes "$hard"
echo "server on $addr, idle RSS $((idle >> 20)) MiB, soft limit $((soft >> 20)) MiB, hard $((hard >> 20)) MiB"
run dispatchctl doctor || true

step "2. load: eight conversations taking turns for ${leak_seconds} s, one of them leaking"
convs=()
for _ in 1 2 3 4 5 6 7 8; do convs+=("$(conversation)"); done
leaky="${convs[0]}"
echo "the leak fault: each turn of conversation $leaky retains 1 MiB for good; the other seven leak nothing"
[[ "$(fault leak "{\"mb_per_turn\": 1, \"conversation\": \"$leaky\"}")" == 200 ]] || fail "the leak fault was refused"
end=$((SECONDS + leak_seconds))
refused=0
while ((SECONDS < end)); do
    for c in "${convs[@]}"; do
        code="$(turn "$c" "size:2000 rate:0")"
        [[ "$code" == 503 ]] && refused=$((refused + 1))
    done
    sleep 0.5
done
echo "turns refused under pressure so far: $refused (none expected yet: the soft limit is 256 MiB above idle)"

step "3. the runbook's first question: leak, or the working set? (runbooks/memory.md)"
sleep 2
run dispatchctl mem || true

step "4. memory pressure: retain more until the soft limit sheds new turns (runbooks/pressure.md)"
[[ "$(fault alloc "{\"mb\": $(((soft - $(rss_bytes)) / 1048576 + 32))}")" == 200 ]] || fail "alloc fault"
sleep 1
printf '\n$ curl -si http://%s/v1/conversations/%s/turns   (a new turn)\n' "$addr" "$leaky"
curl -si -H "authorization: Bearer $api" -H 'content-type: application/json' \
    -d '{"message": "hello"}' "http://$addr/v1/conversations/$leaky/turns" | sed -n '1p;/^retry-after/Ip;$p'
echo
curl -s "http://$addr/health" | sed -E 's/.*("memory_pressure":\{[^}]*\}).*/\1/'
echo

step "5. the hard limit: a controlled recycle (exit 75) instead of the OOM killer"
fault alloc "{\"mb\": $(((hard - soft) / 1048576 + 32))}" >/dev/null || true
status=0
wait "$server_pid" || status=$?
server_pid=""
echo "the process exited with status $status (75: memory-pressure recycle; systemd restarts it)"
[[ "$status" == 75 ]] || fail "expected exit status 75, got $status"
echo "the server is down, so the last records are only in the journal: read it directly (runbooks/crash.md)"
run dispatchctl --journal "$var/journal" crashes || true

step "6. a crash: the restarted server segfaults (runbooks/crash.md)"
start_server
c="$(conversation)"
(turn "$c" "size:100000 rate:20" >/dev/null &)
sleep 1
fault segfault '{}' >/dev/null || true
status=0
wait "$server_pid" || status=$?
server_pid=""
echo "the monitor exited with status $status (139: killed by SIGSEGV, as its child was)"
run dispatchctl --journal "$var/journal" crashes || true
run dispatchctl postmortem latest || true

step "done: every command above is in runbooks/; the files are in $var"
