#!/bin/sh
# Builds the libFuzzer harnesses (ASan/UBSan) and runs each for N seconds (default 60).
# Usage: fuzz/build.sh [seconds] [http|protocol|all]   (default: 60 all; 0 seconds = build only)
#   http      fuzz_http.c: the HTTP parser/server (corpus fuzz/corpus-http/)
#   protocol  fuzz_protocol.c: request bodies through ck_handle, the async store on SQLite and the
#             demo model (corpus fuzz/corpus-protocol/, seeds fuzz/seeds-protocol/)
# Corpora are git-ignored; crashes land in fuzz/crash-* (http) and fuzz/crash-protocol-*.
# Extra libFuzzer flags can be passed in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-jobs=2).
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
which=${2:-all}
out=build-fuzz
case "$which" in http | protocol | all) ;; *) echo "usage: $0 [seconds] [http|protocol|all]" >&2; exit 2 ;; esac
mkdir -p "$out"

# llhttp is third-party code: no warnings from it
for f in api http llhttp; do
    clang -g -O1 -fsanitize=fuzzer-no-link,address,undefined -w -I/usr/share/include/llhttp \
        -c /usr/share/llhttp/$f.c -o "$out/llhttp_$f.o"
done
CFLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
    -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Werror
    -Isrc -I/usr/share/include/llhttp"

build_http() {
    # shellcheck disable=SC2086
    clang $CFLAGS $(pkg-config --cflags libuv jansson) \
        fuzz/fuzz_http.c src/http/*.c src/util/*.c "$out"/llhttp_*.o \
        $(pkg-config --libs libuv jansson) -lm -o "$out/fuzz_http"

    # seeds: first byte is the read size
    mkdir -p fuzz/corpus-http
    seed() { printf '%b' "$2" > "fuzz/corpus-http/$1"; }
    if [ -z "$(ls -A fuzz/corpus-http)" ]; then
        seed get '\0GET /x?a=1 HTTP/1.1\r\nHost: h\r\nCookie: a\r\nCookie: b\r\n\r\n'
        seed post '\003POST /w HTTP/1.1\r\nContent-Type: a/b\r\nContent-Length: 3\r\n\r\nabc'
        seed chunked '\007POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: x\r\n\r\n'
        seed pipe '\0GET /a HTTP/1.1\r\n\r\nGET /o HTTP/1.1\r\n\r\nGET /q?a=%41+b HTTP/1.1\r\n\r\n'
        seed flood '\001GET /f HTTP/1.1\r\n\r\nGET /e?c HTTP/1.0\r\n\r\n'
        seed expect '\0PUT /n HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz'
        seed upgrade '\0GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET / HTTP/1.1\r\n\r\n'
    fi
    cat > "$out/http.dict" <<'DICT'
"GET "
"POST "
"HEAD "
"PUT "
"OPTIONS "
"CONNECT "
" HTTP/1.1\x0d\x0a"
" HTTP/1.0\x0d\x0a"
"\x0d\x0a\x0d\x0a"
"Host: "
"Authorization: "
"Content-Type: "
"Accept-Language: "
"Cookie: "
"Origin: "
"Expect: 100-continue"
"Content-Length: "
"Transfer-Encoding: chunked"
"Connection: close"
"Connection: keep-alive"
"Connection: Upgrade"
"Upgrade: "
"0\x0d\x0a\x0d\x0a"
"/s"
"/f"
"/o"
"/a"
"/q?a="
"%2"
DICT
}

run_http() {
    # shellcheck disable=SC2086
    "$out/fuzz_http" -max_total_time="$secs" -max_len=4096 -dict="$out/http.dict" \
        -artifact_prefix=fuzz/crash- ${FUZZ_FLAGS:-} fuzz/corpus-http
}

build_protocol() {
    # shellcheck disable=SC2086
    # libcurl: headers only (src/llm/fetch.c loads it with dlopen); the harness never uses it
    clang $CFLAGS $(pkg-config --cflags libuv jansson sqlite3) \
        $(pkg-config --cflags libcurl 2>/dev/null || true) \
        fuzz/fuzz_protocol.c $(ls src/*.c src/*/*.c | grep -v '^src/main\.c$') "$out"/llhttp_*.o \
        $(pkg-config --libs libuv jansson sqlite3) -lpthread -ldl -lm -o "$out/fuzz_protocol"

    # mode-byte variants of a few seeds (see fuzz_protocol.c): other auth cases and routes, early
    # disconnects. Written when missing, so a corpus from an older harness gets them too.
    mkdir -p fuzz/corpus-protocol
    seed() { [ -e "fuzz/corpus-protocol/$1" ] || printf '%b' "$2" > "fuzz/corpus-protocol/$1"; }
    create='{"type":"threads.create","params":{"input":{"content":[{"type":"input_text","text":"slow widget"}],"attachments":[],"inference_options":{}}}}'
    list='{"type":"threads.list","params":{"limit":3}}'
    get='{"type":"threads.get_by_id","params":{"thread_id":"thr_fix"}}'
    seed create-nomodel "\010$create"
    seed create-noagent "\031$create"
    seed list-noagent "\031$list"
    seed list-badagent "\032$list"
    seed list-noauth "\013$list"
    seed list-badtoken "\014$list"
    seed list-basic "\035$list"
    seed route-upload "\016abc"
    seed route-metrics "\0236"
    seed route-healthz "\0256"
    seed route-get-api "\0276$list"
    seed get-other "\017$get"
    seed create-gone0 '\0300'"$create"
    seed create-gone3 '\0320'"$create"
    seed create-gone6 '\0340'"$create"
    seed create-gone9 '\0360'"$create"
    seed retry-gone3 '\0320{"type":"threads.retry_after_item","params":{"thread_id":"thr_fix","item_id":"msg_fix_u1"}}'
    cat > "$out/protocol.dict" <<'DICT'
"{\"type\":\"threads.create\",\"params\":{\"input\":{\"content\":[{\"type\":\"input_text\",\"text\":\"x\"}],\"attachments\":[],\"inference_options\":{}}}}"
"threads.create"
"threads.add_user_message"
"threads.add_client_tool_output"
"threads.add_structured_input"
"threads.retry_after_item"
"threads.custom_action"
"threads.sync_custom_action"
"threads.get_by_id"
"threads.list"
"threads.update"
"threads.delete"
"items.list"
"items.feedback"
"attachments.create"
"attachments.delete"
"input.transcribe"
"\"type\":"
"\"params\":"
"\"metadata\":"
"\"input\":"
"\"content\":"
"\"attachments\":"
"\"inference_options\":"
"\"quoted_text\":"
"\"tool_choice\":"
"\"model\":"
"\"input_text\""
"\"input_tag\""
"\"text\":"
"\"id\":"
"\"data\":"
"\"group\":"
"\"interactive\":"
"\"thread_id\":"
"\"item_id\":"
"\"item_ids\":"
"\"attachment_id\":"
"\"result\":"
"\"action\":"
"\"payload\":"
"\"status\":"
"\"answers\":"
"\"values\":"
"\"skipped\":"
"\"answered\""
"\"skipped\""
"\"limit\":"
"\"order\":"
"\"asc\""
"\"desc\""
"\"after\":"
"\"title\":"
"\"kind\":"
"\"positive\""
"\"negative\""
"\"name\":"
"\"size\":"
"\"mime_type\":"
"\"image/png\""
"\"audio_base64\":"
"\"thr_fix\""
"\"thr_other\""
"\"msg_fix_u1\""
"\"msg_fix_a1\""
"\"msg_fix_w\""
"\"msg_fix_h\""
"\"msg_fix_si\""
"\"tc_fix\""
"\"atc_fix\""
"\"color\""
"\"note\""
"\"demo.click\""
"\"demo.sync\""
"slow"
"widget"
"client tool"
"choose"
"fail"
"null"
"true"
"false"
"\\u0000"
"\\ud83d\\ude00"
DICT
}

run_protocol() {
    # one process: the store threads already use the second core
    # shellcheck disable=SC2086
    "$out/fuzz_protocol" -max_total_time="$secs" -max_len=8192 -timeout=30 \
        -dict="$out/protocol.dict" -artifact_prefix=fuzz/crash-protocol- ${FUZZ_FLAGS:-} \
        fuzz/corpus-protocol fuzz/seeds-protocol
}

case "$which" in
http) build_http ;;
protocol) build_protocol ;;
all) build_http && build_protocol ;;
esac
[ "$secs" -gt 0 ] || exit 0
case "$which" in
http) run_http ;;
protocol) run_protocol ;;
all) run_http && run_protocol ;;
esac
