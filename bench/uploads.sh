#!/usr/bin/env bash
# Upload and download throughput, and the server's memory while files stream through it.
#
#   bench/uploads.sh [SIZE_MB [PARALLEL [ROUNDS]]]     defaults: 25 4 3
#
# A release build (build-release/) serves a temp data dir on loopback. Each round, PARALLEL
# curl clients upload a SIZE_MB random file at once (two-phase: attachments.create + PUT of the
# raw bytes; then direct: multipart POST), then download them back (GET with the token). Prints
# MB/s per phase and the server's peak RSS (VmHWM): uploads are streamed to disk, so it must
# stay far below SIZE_MB x PARALLEL.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${1:-25} PAR=${2:-4} ROUNDS=${3:-3}
BUILD_DIR=$ROOT/build-release
[ -d "$BUILD_DIR" ] || meson setup "$BUILD_DIR" --buildtype=release >/dev/null
ninja -C "$BUILD_DIR" chatkitd >/dev/null
BIN=$BUILD_DIR/chatkitd
TMP=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
DEMO=$("$BIN" demo --json --data-dir "$TMP/d" --listen "127.0.0.1:$PORT")
TOKEN=$(printf '%s' "$DEMO" | /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
AGENT=$(printf '%s' "$DEMO" | /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)["agent_id"])')
CHATKIT_LOG_LEVEL=warn CHATKIT_RATE_LIMIT_RPM=0 CHATKIT_UPLOAD_MAX_BYTES=$((SIZE_MB + 1))MiB \
    "$BIN" serve --data-dir "$TMP/d" --listen "127.0.0.1:$PORT" &
PID=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$TMP/file.bin"
BYTES=$((SIZE_MB * 1024 * 1024))
API="http://127.0.0.1:$PORT/chatkit"
AUTH="Authorization: Bearer $TOKEN"

now() { date +%s.%N; }
rate() { /usr/bin/python3 -c "print(f'{$1 * $BYTES / 1048576 / ($3 - $2):.0f}')"; }

# the clients of one phase (not the server, also a job of this shell)
wait_all() { for j in $(jobs -p); do [ "$j" = "$PID" ] || wait "$j"; done; }
for r in $(seq "$ROUNDS"); do
    ids=()
    for i in $(seq "$PAR"); do
        ids+=("$(curl -fs -H "$AUTH" "$API" -d "{\"type\":\"attachments.create\",\"params\":{\"name\":\"f$i.bin\",\"size\":$BYTES,\"mime_type\":\"application/octet-stream\"}}" |
            /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')")
    done
    t0=$(now)
    for id in "${ids[@]}"; do
        curl -fs -o /dev/null -H "$AUTH" -H 'Content-Type: application/octet-stream' -T "$TMP/file.bin" "$API/upload/$id" &
    done
    wait_all
    t1=$(now)
    for i in $(seq "$PAR"); do
        curl -fs -o /dev/null -H "$AUTH" -F "file=@$TMP/file.bin;type=application/octet-stream" "$API/upload?agent_id=$AGENT" &
    done
    wait_all
    t2=$(now)
    for id in "${ids[@]}"; do
        curl -fs -o "$TMP/out.$id" -H "$AUTH" "$API/attachments/$id" &
    done
    wait_all
    t3=$(now)
    for id in "${ids[@]}"; do cmp -s "$TMP/file.bin" "$TMP/out.$id" || { echo "download $id differs" >&2; exit 1; }; rm -f "$TMP/out.$id"; done
    echo "round $r: PUT $(rate "$PAR" "$t0" "$t1") MB/s, direct multipart $(rate "$PAR" "$t1" "$t2") MB/s, GET $(rate "$PAR" "$t2" "$t3") MB/s"
done
echo "server peak RSS: $(grep VmHWM /proc/$PID/status | awk '{print $2, $3}') (files: $PAR x $SIZE_MB MiB at once)"
