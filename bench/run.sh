#!/usr/bin/env bash
# Benchmarks chatkitd on loopback and prints a markdown table of the results.
#
#   bench/run.sh            full run (about two and a half minutes after the build)
#   bench/run.sh --quick    short smoke run (2 s scenarios, 100 idle / relayed streams)
#
# Steps: release build in build-release/ (meson + ninja), a demo account in a temp data dir,
# `chatkitd serve` on 127.0.0.1:PORT, then with bench/loadgen:
#   1. threads.create turns/s and time to first event (SSE) at concurrency 16 and 128
#   2. threads.get_by_id req/s on a thread with 20 items at concurrency 16
#   3. server RSS idle, and with IDLE_STREAMS open idle streams (a fresh server with
#      CHATKIT_DEMO_DELAY_MS=60000, whose "slow" demo turns then stay open and idle)
#   4. relay: bench/mock_upstream serves Chat Completions streams; a fresh server with
#      OPENAI_BASE_URL pointing at it and an `openai:mock` agent. threads.create turns/s and the
#      relay's added latency (mock's first content delta -> that delta's event at loadgen,
#      loadgen --relay-latency) at concurrency 1, 16 and 128 with the mock answering at once
#      (saturating), and at 16 and 128 with the mock pacing its deltas RELAY_PACE_MS apart (a
#      model's rhythm; the loop is far from saturated); then, against a mock that holds its
#      streams open (--hold-ms), server RSS per active relayed stream with RELAY_STREAMS streams
#      open (RSS after a warm-up that loaded libcurl vs. while they are held)
# The servers and mocks are stopped by PID and the temp dirs removed on exit.
#
# Environment (all optional):
#   DURATION=10 WARMUP=2          seconds per load scenario and warmup before it
#   IDLE_STREAMS=1000 HOLD=10     open idle streams and how long loadgen holds them
#   RELAY_STREAMS=1000            active relayed streams held for the relay memory scenario
#   RELAY_DELTAS=8                content deltas per mock answer
#   RELAY_PACE_MS=20              paced scenarios: first delta and each next one this long apart
#   SCENARIOS="base relay"        which groups run: base (1-3) and/or relay (4)
#   LOADGEN_THREADS=1             loadgen worker threads
#   PORT=                         listen port (default: a free one)
#   BUILD_DIR=build-release       build directory (relative to the repo root)
#   SKIP_BUILD=1                  use the existing build as it is
#   CHATKITD=, LOADGEN=, MOCK=    binaries to use instead of the ones in BUILD_DIR
#   OUT=file.md                   also write the markdown report there
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
IDLE_STREAMS=${IDLE_STREAMS:-1000}
HOLD=${HOLD:-10}
RELAY_STREAMS=${RELAY_STREAMS:-1000}
RELAY_DELTAS=${RELAY_DELTAS:-8}
RELAY_PACE_MS=${RELAY_PACE_MS:-20}
SCENARIOS=${SCENARIOS:-base relay}
if [ "${1:-}" = "--quick" ]; then
    DURATION=2 WARMUP=0.5 IDLE_STREAMS=100 HOLD=2 RELAY_STREAMS=100
elif [ $# -gt 0 ]; then
    sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
want() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
BUILD_DIR=${BUILD_DIR:-build-release}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac

log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- build
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${CHATKITD:-}" ]; then
    if [ ! -f "$BUILD_DIR/build.ninja" ]; then
        log "meson setup $BUILD_DIR --buildtype=release"
        meson setup "$BUILD_DIR" "$ROOT" --buildtype=release >&2
    fi
    log "ninja -C $BUILD_DIR"
    ninja -C "$BUILD_DIR" >&2
fi
CHATKITD=${CHATKITD:-$BUILD_DIR/chatkitd}
LOADGEN=${LOADGEN:-$BUILD_DIR/bench/loadgen}
MOCK=${MOCK:-$BUILD_DIR/bench/mock_upstream}
[ -x "$CHATKITD" ] || { log "no chatkitd binary at $CHATKITD"; exit 1; }
[ -x "$LOADGEN" ] || { log "no loadgen binary at $LOADGEN"; exit 1; }

# ---------------------------------------------------------------- state and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatkitd-bench.XXXXXX")
SERVER_PID=""
SERVER_LOG=""
IDLE_PID=""
MOCK_PID=""

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cleanup() {
    local rc=$?
    if [ -n "$IDLE_PID" ]; then
        kill "$IDLE_PID" 2>/dev/null || true
        wait "$IDLE_PID" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -n "$SERVER_LOG" ] && [ -f "$SERVER_LOG" ]; then
        log "failed (exit $rc); last lines of the server log:"
        tail -n 20 "$SERVER_LOG" >&2 || true
    fi
    stop_server
    stop_mock
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if want relay && [ ! -x "$MOCK" ]; then
    # e.g. CHATKITD and LOADGEN given, no build: mock_upstream is one file, build it here
    MOCK="$WORK/mock_upstream"
    log "building $MOCK"
    cc -O2 -o "$MOCK" "$ROOT/bench/mock_upstream.c" || { log "cannot build bench/mock_upstream.c"; exit 1; }
fi

# The server may hold many connections: give it (and loadgen) the hard fd limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "${PORT:-}" ]; then
    PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
fi
BASE="http://127.0.0.1:$PORT"

# jfield FILE KEY...: a field of the JSON object in FILE (the last JSON line when it holds several)
jfield() {
    "$PY" - "$@" <<'PY'
import json, sys
path, keys = sys.argv[1], sys.argv[2:]
text = open(path).read()
obj = None
for line in text.splitlines():
    line = line.strip()
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            pass
if obj is None:
    obj = json.loads(text)
for k in keys:
    obj = obj[k]
print(obj)
PY
}

# make_account DIR: runs `chatkitd demo`, sets AGENT_ID and TOKEN
make_account() {
    local dir=$1
    mkdir -p "$dir"
    "$CHATKITD" demo --json --data-dir "$dir" >"$dir.demo.json" 2>"$dir.demo.log" || {
        log "chatkitd demo failed:"; cat "$dir.demo.log" >&2; exit 1; }
    AGENT_ID=$(jfield "$dir.demo.json" agent_id)
    TOKEN=$(jfield "$dir.demo.json" token)
    URL="$BASE/chatkit?agent_id=$AGENT_ID"
    AUTH="Authorization: Bearer $TOKEN"
}

# start_server DIR [VAR=VALUE...]: serve DIR in the background, wait for /healthz
start_server() {
    local dir=$1
    shift
    SERVER_LOG="$dir.server.log"
    env CHATKIT_LOG_LEVEL=warn CHATKIT_RATE_LIMIT_RPM=0 CHATKIT_MAX_STREAMS_PER_USER=0 "$@" "$CHATKITD" serve --data-dir "$dir" --listen "127.0.0.1:$PORT" \
        >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local i code
    for i in $(seq 1 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "chatkitd serve exited early"
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            exit 1
        fi
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$BASE/healthz" || true)
        [ "$code" = "200" ] && return 0
        sleep 0.1
    done
    log "chatkitd did not answer GET /healthz with 200 within 10 s"
    exit 1
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }

# start_mock NAME ARGS...: bench/mock_upstream in the background; sets MOCK_PID and MOCK_PORT
start_mock() {
    local name=$1
    shift
    "$MOCK" "$@" >"$WORK/$name.port" 2>"$WORK/$name.log" &
    MOCK_PID=$!
    local i
    MOCK_PORT=""
    for i in $(seq 1 100); do
        MOCK_PORT=$(head -n 1 "$WORK/$name.port" 2>/dev/null || true)
        [ -n "$MOCK_PORT" ] && return 0
        kill -0 "$MOCK_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "mock_upstream did not start:"; cat "$WORK/$name.log" >&2
    exit 1
}

stop_mock() {
    if [ -n "$MOCK_PID" ]; then
        kill "$MOCK_PID" 2>/dev/null || true # SIGTERM: it prints its counters to its log
        wait "$MOCK_PID" 2>/dev/null || true
        MOCK_PID=""
    fi
}

# make_relay_agent DIR: after make_account DIR, an `openai:mock` agent; URL now names it
make_relay_agent() {
    local dir=$1 account
    account=$(jfield "$dir.demo.json" account_id)
    "$CHATKITD" agent create --json --data-dir "$dir" --account "$account" --name relay-bench \
        --model openai:mock >"$dir.agent.json" 2>"$dir.agent.log" || {
        log "chatkitd agent create failed:"; cat "$dir.agent.log" >&2; exit 1; }
    AGENT_ID=$(jfield "$dir.agent.json" id)
    URL="$BASE/chatkit?agent_id=$AGENT_ID"
}

# chatkit_post BODY: one ChatKit request through curl, the whole (SSE) response on stdout
chatkit_post() {
    curl -sS -N -m 60 -X POST "$URL" -H "$AUTH" -H 'Content-Type: application/json' --data-binary "$1"
}

input_json() { # input_json TEXT
    printf '{"content":[{"type":"input_text","text":"%s"}],"attachments":[],"inference_options":{}}' "$1"
}

# loadgen_run NAME ARGS...: one load scenario, its JSON report in $WORK/NAME.json
loadgen_run() {
    local name=$1
    shift
    log "scenario $name: loadgen $*"
    "$LOADGEN" --url "$URL" --header "$AUTH" --threads "$LOADGEN_THREADS" --json "$@" \
        >"$WORK/$name.json" 2>"$WORK/$name.log" || log "scenario $name: loadgen reported no successful request"
    "$PY" - "$WORK/$name.json" <<'PY' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
line = "[bench]   %d requests, %.1f req/s, p50 %.2f ms, p99 %.2f ms, %d errors" % (
    r["requests"], r["rps"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"])
if r.get("first_error"):
    line += " (first: %s)" % r["first_error"][:160]
print(line)
PY
}

CREATE_BODY='{"type":"threads.create","params":{"input":'"$(input_json 'bench {{RAND}}')"'}}'

# ---------------------------------------------------------------- throughput server
RSS_AFTER_LOAD="" RSS_IDLE="" RSS_STREAMS="" ITEMS="?"
if want base; then # (scenarios 1-3: not indented, to keep their history readable)
DATA="$WORK/data"
make_account "$DATA"
log "account: agent $AGENT_ID; server on $BASE"
start_server "$DATA"

loadgen_run create_c16 --body "$CREATE_BODY" --sse --concurrency 16 --duration "$DURATION" --warmup "$WARMUP"
loadgen_run create_c128 --body "$CREATE_BODY" --sse --concurrency 128 --duration "$DURATION" --warmup "$WARMUP"

# a thread with 20 items: one threads.create (2 items), then 9 threads.add_user_message turns
log "building a thread with 20 items"
chatkit_post '{"type":"threads.create","params":{"input":'"$(input_json 'bench thread turn 1')"'}}' >"$WORK/create.sse"
THREAD_ID=$("$PY" - "$WORK/create.sse" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("data:"):
        try:
            ev = json.loads(line[5:])
        except ValueError:
            continue
        if ev.get("type") == "thread.created":
            print(ev["thread"]["id"])
            break
PY
)
if [ -z "$THREAD_ID" ]; then
    log "no thread.created event in the threads.create response:"
    head -c 2000 "$WORK/create.sse" >&2
    exit 1
fi
for turn in 2 3 4 5 6 7 8 9 10; do
    chatkit_post '{"type":"threads.add_user_message","params":{"thread_id":"'"$THREAD_ID"'","input":'"$(input_json "bench thread turn $turn")"'}}' \
        >"$WORK/turn.sse"
    if grep -q '"type": *"error"' "$WORK/turn.sse"; then
        log "turn $turn failed:"; head -c 2000 "$WORK/turn.sse" >&2; exit 1
    fi
done
GET_BODY='{"type":"threads.get_by_id","params":{"thread_id":"'"$THREAD_ID"'"}}'
chatkit_post "$GET_BODY" >"$WORK/thread.json"
ITEMS=$("$PY" - "$WORK/thread.json" <<'PY' || echo "?"
import json, sys
t = json.load(open(sys.argv[1]))
items = t.get("items")
if isinstance(items, dict):
    items = items.get("data")
print(len(items) if isinstance(items, list) else "?")
PY
)
log "thread $THREAD_ID has $ITEMS items"
loadgen_run get_c16 --body "$GET_BODY" --concurrency 16 --duration "$DURATION" --warmup "$WARMUP"
RSS_AFTER_LOAD=$(rss_kib)
stop_server

# ---------------------------------------------------------------- memory server
DATA2="$WORK/data-rss"
make_account "$DATA2"
start_server "$DATA2" CHATKIT_DEMO_DELAY_MS=60000
chatkit_post '{"type":"threads.create","params":{"input":'"$(input_json 'hello')"'}}' >/dev/null
sleep 0.5
RSS_IDLE=$(rss_kib)
log "server RSS idle: $RSS_IDLE KiB; opening $IDLE_STREAMS slow streams"
SLOW_BODY='{"type":"threads.create","params":{"input":'"$(input_json 'slow bench {{RAND}}')"'}}'
"$LOADGEN" --url "$URL" --header "$AUTH" --body "$SLOW_BODY" --sse --json --threads "$LOADGEN_THREADS" \
    --open-idle "$IDLE_STREAMS" --hold "$HOLD" >"$WORK/idle.json" 2>"$WORK/idle.log" &
IDLE_PID=$!
for i in $(seq 1 400); do # the ramp: up to loadgen's 30 s ramp timeout and a bit
    grep -q 'holding' "$WORK/idle.log" 2>/dev/null && break
    kill -0 "$IDLE_PID" 2>/dev/null || break
    sleep 0.1
done
sleep "$("$PY" -c "print(min(2.0, $HOLD / 2))")"
RSS_STREAMS=$(rss_kib)
wait "$IDLE_PID" || log "open-idle: not every stream opened (see below)"
IDLE_PID=""
grep 'holding' "$WORK/idle.log" | sed 's/^/[bench]   /' >&2 || true
stop_server
fi # want base

# ---------------------------------------------------------------- relay against the mock upstream
RELAY_RSS_WARM="" RELAY_RSS_STREAMS="" RELAY_RSS_AFTER="" RELAY_UP_OPEN=""
if want relay; then
# (a) throughput and added latency: the mock answers at once, RELAY_DELTAS deltas, no gaps
start_mock mock_fast --deltas "$RELAY_DELTAS"
log "mock upstream on 127.0.0.1:$MOCK_PORT (pid $MOCK_PID)"
DATA3="$WORK/data-relay"
make_account "$DATA3"
make_relay_agent "$DATA3"
# CHATKIT_MODEL_TITLES=0: one upstream request per turn (by default a new thread also asks the
# model for its title, a second request beside the answer; measured once, below)
relay_env() { RELAY_ENV=(OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" OPENAI_API_KEY=bench-not-a-key "$@"); }
relay_env CHATKIT_MODEL_TITLES=0
start_server "$DATA3" "${RELAY_ENV[@]}"
chatkit_post '{"type":"threads.create","params":{"input":'"$(input_json 'relay check')"'}}' >"$WORK/relay.sse"
if ! grep -q '"delta": *"t=[0-9]*;' "$WORK/relay.sse"; then
    log "the relayed turn carried no stamped delta from the mock:"; head -c 3000 "$WORK/relay.sse" >&2; exit 1
fi
for c in 1 16 128; do
    loadgen_run "relay_c$c" --body "$CREATE_BODY" --sse --relay-latency --concurrency "$c" \
        --duration "$DURATION" --warmup "$WARMUP"
    "$PY" - "$WORK/relay_c$c.json" <<'PY' >&2 || true
import json, sys
r = json.load(open(sys.argv[1])).get("relay_latency_ms") or {}
print("[bench]   relay added latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms over %d stamps" % (
    r.get("p50", 0), r.get("p99", 0), r.get("max", 0), r.get("count", 0)))
PY
done
stop_server
# the default configuration: every threads.create also asks the model for a title
relay_env
start_server "$DATA3" "${RELAY_ENV[@]}"
loadgen_run relay_titles_c16 --body "$CREATE_BODY" --sse --relay-latency --concurrency 16 \
    --duration "$DURATION" --warmup "$WARMUP"
stop_server
stop_mock

# (a2) the same turns with the deltas paced like a model's (RELAY_PACE_MS to the first delta
# and between deltas): the relay's own latency when the loop is not saturated
start_mock mock_paced --deltas "$RELAY_DELTAS" --first-ms "$RELAY_PACE_MS" --gap-ms "$RELAY_PACE_MS"
relay_env CHATKIT_MODEL_TITLES=0
start_server "$DATA3" "${RELAY_ENV[@]}"
for c in 16 128; do
    loadgen_run "relay_paced_c$c" --body "$CREATE_BODY" --sse --relay-latency --concurrency "$c" \
        --duration "$DURATION" --warmup "$WARMUP"
    "$PY" - "$WORK/relay_paced_c$c.json" <<'PY' >&2 || true
import json, sys
r = json.load(open(sys.argv[1])).get("relay_latency_ms") or {}
print("[bench]   relay added latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms over %d stamps" % (
    r.get("p50", 0), r.get("p99", 0), r.get("max", 0), r.get("count", 0)))
PY
done
stop_server
stop_mock

# (b) memory per active relayed stream: the mock sends its deltas, then holds each stream open
# far longer than loadgen's ramp and hold; the server's model idle timeout is raised past that
MOCK_HOLD_MS=$("$PY" -c "print(int(($HOLD + 120) * 1000))")
start_mock mock_hold --deltas "$RELAY_DELTAS" --hold-ms "$MOCK_HOLD_MS"
DATA4="$WORK/data-relay-rss"
make_account "$DATA4"
make_relay_agent "$DATA4"
relay_env CHATKIT_MODEL_TITLES=0 # a held title request would count as a second stream
start_server "$DATA4" "${RELAY_ENV[@]}" \
    CHATKIT_LLM_IDLE_TIMEOUT_MS=$(( (HOLD + 300) * 1000 )) \
    CHATKIT_MAX_CONNECTIONS=$(( RELAY_STREAMS * 2 + 1000 ))
# warm-up: 16 relayed streams opened and dropped (libcurl loaded, its multi handle and the
# relay path's allocations made once), so the baseline holds everything but the streams
"$LOADGEN" --url "$URL" --header "$AUTH" --body "$CREATE_BODY" --sse --relay-latency --json --quiet \
    --open-idle 16 --hold 0.5 >"$WORK/relay_warm.json" 2>"$WORK/relay_warm.log" ||
    log "relay warm-up: not every stream relayed (see $WORK/relay_warm.log)"
sleep 1
RELAY_RSS_WARM=$(rss_kib)
log "server RSS after the relay warm-up: $RELAY_RSS_WARM KiB; opening $RELAY_STREAMS relayed streams"
"$LOADGEN" --url "$URL" --header "$AUTH" --body "$CREATE_BODY" --sse --relay-latency --json \
    --threads "$LOADGEN_THREADS" --open-idle "$RELAY_STREAMS" --hold "$HOLD" \
    >"$WORK/relay_idle.json" 2>"$WORK/relay_idle.log" &
IDLE_PID=$!
for i in $(seq 1 400); do
    grep -q 'holding' "$WORK/relay_idle.log" 2>/dev/null && break
    kill -0 "$IDLE_PID" 2>/dev/null || break
    sleep 0.1
done
sleep "$("$PY" -c "print(min(2.0, $HOLD / 2))")"
RELAY_RSS_STREAMS=$(rss_kib)
kill -USR1 "$MOCK_PID" 2>/dev/null || true # its counters (streams open upstream) into its log
wait "$IDLE_PID" || log "relay open-idle: not every stream relayed (see below)"
IDLE_PID=""
grep 'holding' "$WORK/relay_idle.log" | sed 's/^/[bench]   /' >&2 || true
sleep 1
RELAY_RSS_AFTER=$(rss_kib)
sleep 0.2
grep 'mock_upstream:' "$WORK/mock_hold.log" | head -n 1 | sed 's/^/[bench]   while held: /' >&2 || true
RELAY_UP_OPEN=$(grep 'mock_upstream:' "$WORK/mock_hold.log" | head -n 1 | sed -n 's/.* \([0-9]*\) open, peak.*/\1/p')
stop_server
stop_mock
fi # want relay

# ---------------------------------------------------------------- report
REPORT=$("$PY" - "$WORK" "$RSS_IDLE" "$RSS_STREAMS" "$RSS_AFTER_LOAD" "$IDLE_STREAMS" "$ITEMS" "$DURATION" "$WARMUP" \
    "$SCENARIOS" "$RELAY_RSS_WARM" "$RELAY_RSS_STREAMS" "$RELAY_RSS_AFTER" "$RELAY_STREAMS" "$RELAY_DELTAS" \
    "$RELAY_PACE_MS" "$RELAY_UP_OPEN" <<'PY'
import json, os, sys
work, rss_idle, rss_streams, rss_load, n_idle, items, duration, warmup = sys.argv[1:9]
scenarios = sys.argv[9].split()
relay_warm, relay_streams, relay_after, n_relay, n_deltas, pace_ms, up_open = sys.argv[10:17]

def load(name):
    try:
        return json.load(open(os.path.join(work, name + ".json")))
    except (OSError, ValueError):
        return None

def f(v, fmt="%.2f"):
    return fmt % v if isinstance(v, (int, float)) else "n/a"

def kib(v):
    try:
        return int(v)
    except ValueError:
        return None

rows = [("threads.create (SSE)", "create_c16"), ("threads.create (SSE)", "create_c128"),
        ("threads.get_by_id (%s items)" % items, "get_c16")]
out = []
errors = []
out.append("### chatkitd benchmark: %s s per scenario after %s s warmup, %d cores, loopback" % (duration, warmup, os.cpu_count()))
out.append("")
if "base" in scenarios:
    out.append("| scenario | conc. | req/s | p50 ms | p90 ms | p99 ms | max ms | TTFE p50 ms | TTFE p90 ms | TTFE p99 ms | events/resp | requests | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, name in rows:
        r = load(name)
        if r is None:
            out.append("| %s | | n/a | | | | | | | | | | |" % label)
            continue
        lat = r["latency_ms"]
        t = r.get("ttfe_ms") or {}
        sse = r.get("sse")
        out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |" % (
            label, r["concurrency"], f(r["rps"], "%.1f"), f(lat["p50"]), f(lat["p90"]), f(lat["p99"]), f(lat["max"]),
            f(t.get("p50")) if sse else "–", f(t.get("p90")) if sse else "–", f(t.get("p99")) if sse else "–",
            f(r.get("events_per_response"), "%.1f") if sse else "–", r["requests"], r["errors"]))
        if r["errors"]:
            kinds = ", ".join("%s %d" % (k, v) for k, v in r["errors_by_kind"].items() if v)
            errors.append("- %s c=%d: %s; first: `%s`" % (label, r["concurrency"], kinds, r["first_error"][:200]))

    idle = load("idle") or {}
    ri, rs, rl = kib(rss_idle), kib(rss_streams), kib(rss_load)
    n = int(n_idle)
    out.append("")
    out.append("| memory | value |")
    out.append("|---|---:|")
    out.append("| server RSS idle (after start + 1 request) | %s KiB |" % (ri if ri is not None else "n/a"))
    opened = idle.get("ready_at_hold")
    out.append("| server RSS with %d open idle streams | %s KiB (%s of %d streams open) |" % (
        n, rs if rs is not None else "n/a", opened if opened is not None else "?", n))
    if ri is not None and rs is not None:
        out.append("| per open stream: (with - idle) / %d | %.1f KiB |" % (n, (rs - ri) / n))
    out.append("| server RSS after the throughput scenarios | %s KiB |" % (rl if rl is not None else "n/a"))
    if idle.get("errors"):
        errors.append("- open idle streams: %d errors; first: `%s`" % (idle["errors"], idle.get("first_error", "")[:200]))

if "relay" in scenarios:
    if out[-1]:
        out.append("")
    out.append("#### relay against bench/mock_upstream (%s content deltas per answer)" % n_deltas)
    out.append("")
    out.append("| relayed threads.create (SSE) | conc. | turns/s | p50 ms | p99 ms | TTFE p50 ms | relay p50 ms | relay p90 ms | relay p99 ms | relay max ms | events/resp | requests | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    paced = "paced: %s ms to the first delta, %s ms apart" % (pace_ms, pace_ms)
    for label, name, c in [("deltas at once (saturating)", "relay_c%d" % c, c) for c in (1, 16, 128)] + \
                          [("deltas at once, model titles on (2 upstream requests per turn)", "relay_titles_c16", 16)] + \
                          [(paced, "relay_paced_c%d" % c, c) for c in (16, 128)]:
        r = load(name)
        if r is None:
            out.append("| %s | %d | n/a | | | | | | | | | | |" % (label, c))
            continue
        lat, t, rl = r["latency_ms"], r.get("ttfe_ms") or {}, r.get("relay_latency_ms") or {}
        out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |" % (
            label, c, f(r["rps"], "%.1f"), f(lat["p50"]), f(lat["p99"]), f(t.get("p50")), f(rl.get("p50"), "%.3f"),
            f(rl.get("p90"), "%.3f"), f(rl.get("p99"), "%.3f"), f(rl.get("max"), "%.3f"),
            f(r.get("events_per_response"), "%.1f"), r["requests"], r["errors"]))
        if r["errors"]:
            kinds = ", ".join("%s %d" % (k, v) for k, v in r["errors_by_kind"].items() if v)
            errors.append("- relay %s c=%d: %s; first: `%s`" % (label, c, kinds, r["first_error"][:200]))
        if r.get("relay_missing"):
            errors.append("- relay %s c=%d: %d responses without the stamped delta" % (label, c, r["relay_missing"]))
    out.append("")
    out.append("relay = from the mock writing its first content delta (`t=<CLOCK_MONOTONIC ns>;`) to loadgen "
               "reading that delta's `thread.item.updated` event. `CHATKIT_MODEL_TITLES=0` except where noted.")
    rw, rs2, ra = kib(relay_warm), kib(relay_streams), kib(relay_after)
    nr = int(n_relay)
    ri = load("relay_idle") or {}
    out.append("")
    out.append("| relay memory | value |")
    out.append("|---|---:|")
    out.append("| server RSS after a warm-up (16 relayed streams opened and dropped: libcurl loaded) | %s KiB |" % (rw if rw is not None else "n/a"))
    relaying = ri.get("ready_at_hold")
    out.append("| server RSS with %d active relayed streams (upstream open, deltas relayed) | %s KiB (%s of %d relaying; %s upstream streams open) |" % (
        nr, rs2 if rs2 is not None else "n/a", relaying if relaying is not None else "?", nr, up_open or "?"))
    if rw is not None and rs2 is not None:
        out.append("| **per active relayed stream**: (with - warm) / %d | **%.1f KiB** |" % (nr, (rs2 - rw) / nr))
    out.append("| server RSS 1 s after the streams closed | %s KiB |" % (ra if ra is not None else "n/a"))
    rl = ri.get("relay_latency_ms") or {}
    if rl.get("count"):
        out.append("| relay latency while opening them all at once: p50 / p99 | %.3f / %.3f ms |" % (rl["p50"], rl["p99"]))
    if ri.get("errors"):
        errors.append("- relayed streams: %d errors; first: `%s`" % (ri["errors"], ri.get("first_error", "")[:200]))
if errors:
    out.append("")
    out.append("Errors:")
    out.extend(errors)
print("\n".join(out))
PY
)
printf '%s\n' "$REPORT"
if [ -n "${OUT:-}" ]; then
    printf '%s\n' "$REPORT" >"$OUT"
    log "report written to $OUT"
fi
