#!/bin/sh
# The libFuzzer harnesses (ASan/UBSan), built by fuzz/fuzz.mk into build-fuzz/ (one object per
# source, compiled in parallel on every core):
#   http      fuzz_http.c: the HTTP parser/server
#   protocol  fuzz_protocol.c: request bodies through ck_handle, the async store on SQLite and the
#             demo model
#   sse       fuzz_sse.c: the SSE client parser against a reference reading
#   llm       fuzz_llm.c: the upstream stream decoders (Chat Completions, Responses, Anthropic)
#             behind the SSE parser, base64, the request body builders
#   multipart fuzz_multipart.c: the multipart/form-data upload parser, whole vs cut feeds
#   sniff     fuzz_sniff.c: the upload content checks (type sniffing, UTF-8, declared-type rules,
#             stored names, Content-Disposition), whole vs cut feeds
#
# Usage:
#   fuzz/build.sh [seconds] [HARNESS|all]
#       Build, then run each harness for seconds (default 60 all; 0 = build only). Extra
#       libFuzzer flags in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-runs=10000000).
#   fuzz/build.sh ci [seconds [HARNESS...]]
#       What scripts/test.sh runs (make fuzz-ci): build, then each harness (default all) for
#       seconds (default 8) on a temporary copy of its committed corpus. One line per harness,
#       "fuzz HARNESS: ok (...)" or "fuzz HARNESS: FAIL (...)" (a build failure, crash, leak,
#       timeout or OOM, with the saved input's path and the report), then "fuzz: N passed, N
#       failed". Writes nothing outside build-fuzz/ and a temporary directory.
#   fuzz/build.sh merge [HARNESS|all]
#       Rewrites the committed corpus fuzz/corpus/HARNESS/ as the smallest set of inputs
#       (libFuzzer -merge=1) keeping the coverage of itself, the scratch corpus and the seeds.
#       Run after a long run, then commit (make fuzz-merge).
# Files:
#   fuzz/corpus/HARNESS/   committed, minimized corpora (CI and long runs start from them)
#   fuzz/corpus-HARNESS/   scratch corpora (git-ignored): long runs add their new inputs there;
#                          the seeds below are written into it when missing
#   fuzz/seeds-protocol/   hand-written protocol request bodies (committed, read as a second seed
#                          directory by protocol runs and merges)
#   fuzz/dict/HARNESS.dict libFuzzer dictionaries
#   fuzz/crash-HARNESS-*   crashes, leaks and timeouts of long runs (git-ignored); those of CI
#                          runs land in build-fuzz/ci-artifacts/HARNESS-*
# Per-input limits: -max_len and -timeout below (harness_opts); 30 s for protocol, 10 s else.
# Committed inputs are at most 1 KiB (FUZZ_MERGE_LEN, see merge).
set -eu
cd "$(dirname "$0")/.."
out=build-fuzz
harnesses="http protocol sse llm multipart sniff"
jobs=$(nproc 2>/dev/null || echo 2)

usage() {
    echo "usage: $0 [seconds] [http|protocol|sse|llm|multipart|sniff|all]" >&2
    echo "       $0 ci [seconds [http|protocol|sse|llm|multipart|sniff]...]" >&2
    echo "       $0 merge [http|protocol|sse|llm|multipart|sniff|all]" >&2
    exit 2
}

# -> max_len, timeout, merge_len (see merge) and seeds (extra read-only seed directories) for
# harness $1
harness_opts() {
    seeds=""
    timeout=10
    merge_len=${FUZZ_MERGE_LEN:-1024}
    case "$1" in
    http) max_len=4096 ;;
    protocol) max_len=8192 timeout=30 seeds=fuzz/seeds-protocol ;;
    sse) max_len=4096 ;;
    llm) max_len=8192 ;;
    multipart) max_len=4096 ;;
    sniff) max_len=2048 ;;
    *) usage ;;
    esac
}

# make targets for the harnesses named in $@; a failed build stops the script (set -e)
build() {
    t=""
    for h in "$@"; do t="$t $out/fuzz_$h"; done
    # shellcheck disable=SC2086
    make -s -f fuzz/fuzz.mk -j"$jobs" OUT="$out" $t
}

# the directories among $@ that exist
existing() {
    for d in "$@"; do
        if [ -d "$d" ]; then printf '%s\n' "$d"; fi
    done
}

count() { find "$1" -type f | wc -l; }

# The seeds of the scratch corpora (inputs as each harness's header comment describes them).
seed_http() {
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
    # streamed bodies and responses (added later: seeded into an existing corpus too)
    if [ ! -e fuzz/corpus-http/upload ]; then
        seed upload '\005PUT /u HTTP/1.1\r\nContent-Length: 12\r\n\r\nhello, world'
        seed upchunk '\003POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n'
        seed reject '\0POST /r HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET /d?s HTTP/1.1\r\n\r\n'
        seed download '\0HEAD /d HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\nGET /d?s HTTP/1.1\r\n\r\n'
    fi
}

seed_protocol() {
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
}

seed_sse() {
    # seeds: bytes 0-1 = where to cut, byte 2 = the data cap (255 = the default), then the stream
    mkdir -p fuzz/corpus-sse
    seed() { [ -e "fuzz/corpus-sse/$1" ] || printf '%b' "$2" > "fuzz/corpus-sse/$1"; }
    if [ -z "$(ls -A fuzz/corpus-sse)" ]; then
        seed chat '\005\0\0377data: {"a":1}\n\ndata: [DONE]\n\n'
        seed named '\021\0\0377event: message_start\ndata: {}\n\n: ping\n\nevent: x\nid: 7\ndata: a\ndata: b\n\n'
        seed crlf '\003\0\0377\0357\0273\0277data: a\r\n\r\ndata:b\rdata\r\r'
        seed cap '\0\0\0001data: abcdef\n\n'
    fi
}

seed_llm() {
    # seeds (see fuzz_llm.c): byte 0 = mode + 5 * flags; for the streams byte 1 = how the
    # stream is cut (0 = whole). Streams as tests/fixtures/mock_llm.py and the reference
    # (mcp-and-llm.md §4) send them, plus the tolerated variants. Written when missing.
    mkdir -p fuzz/corpus-llm
    seed() {
        [ -e "fuzz/corpus-llm/$1" ] && return 0
        { for b in $2; do printf '%b' "\\0$(printf %03o "$b")"; done; printf '%b' "$3"; } \
            > "fuzz/corpus-llm/$1"
    }
    # Chat Completions
    c='data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock",'
    seed chat-text '0 0' "$c"'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'"$c"'"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}\n\n'"$c"'"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}\n\n'"$c"'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'"$c"'"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}\n\ndata: [DONE]\n\n'
    seed chat-tools '0 7' "$c"'"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}\n\n'"$c"'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"loc"}}]},"finish_reason":null}]}\n\n'"$c"'"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_def","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}\n\n'"$c"'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ation\\":\\"Paris\\"}"}}]},"finish_reason":null}]}\n\n'"$c"'"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n'
    seed chat-error '0 0' "$c"'"choices":[{"index":0,"delta":{"content":"Before the error. "},"finish_reason":null}]}\n\ndata: {"error":{"message":"Overloaded","type":"server_error"}}\n\n'
    seed chat-compat '0 3' ': keep-alive\r\n\r\ndata: {"choices":[{"delta":{"tool_calls":[{"id":"call_1","function":{"name":"f","arguments":{"a":[1,2]}}},{"index":2,"function":{"name":"g"}}]},"finish_reason":"tool_calls"}]}\r\n\r\ndata: {"choices":[{"delta":{"content":"x"}}],\r\ndata: "usage":{"prompt_tokens":1,"completion_tokens":2}}\r\n\r\n'
    seed chat-cut '0 1' 'data: {"choices":[{"index":0,"delta":{"content":"Partial "}}]}\n\ndata: {"choices":[{"index":0,"delta":{"content":"answer"}}]}\n\n'
    seed chat-garbage '0 0' "$c"'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\ndata: {this is not json\n\n'
    seed chat-after-done '5 0' 'data: {"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\ndata: {"choices":[{"delta":{"content":"late"}}]}\n\n'
    # Responses
    r='{"type":"response.'
    seed rsp-text '1 0' 'event: response.created\ndata: '"$r"'created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[],"usage":null}}\n\nevent: response.output_item.added\ndata: '"$r"'output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}\n\nevent: response.content_part.added\ndata: '"$r"'content_part.added","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}\n\nevent: response.output_text.delta\ndata: '"$r"'output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel","logprobs":[]}\n\nevent: response.output_text.delta\ndata: '"$r"'output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"lo","logprobs":[]}\n\nevent: response.output_text.done\ndata: '"$r"'output_text.done","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hello","logprobs":[]}\n\nevent: response.output_item.done\ndata: '"$r"'output_item.done","sequence_number":6,"output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"text":"Hello"}],"role":"assistant"}}\n\nevent: response.completed\ndata: '"$r"'completed","sequence_number":7,"response":{"id":"resp_1","status":"completed","output":[{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"text":"Hello"}],"role":"assistant"}],"usage":{"input_tokens":50,"output_tokens":2,"total_tokens":52}}}\n\n'
    seed rsp-tools '1 11' 'event: response.output_item.added\ndata: '"$r"'output_item.added","sequence_number":2,"output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"","status":"in_progress"}}\n\nevent: response.function_call_arguments.delta\ndata: '"$r"'function_call_arguments.delta","sequence_number":3,"item_id":"fc_1","output_index":0,"delta":"{\\"location\\":"}\n\nevent: response.function_call_arguments.delta\ndata: '"$r"'function_call_arguments.delta","sequence_number":4,"item_id":"fc_1","output_index":0,"delta":"\\"Paris\\"}"}\n\nevent: response.function_call_arguments.done\ndata: '"$r"'function_call_arguments.done","sequence_number":5,"item_id":"fc_1","output_index":0,"arguments":"{\\"location\\":\\"Paris\\"}"}\n\nevent: response.output_item.done\ndata: '"$r"'output_item.done","sequence_number":6,"output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\\"location\\":\\"Paris\\"}","status":"completed"}}\n\nevent: response.completed\ndata: '"$r"'completed","sequence_number":7,"response":{"id":"resp_1","status":"completed","output":[{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\\"location\\":\\"Paris\\"}","status":"completed"}],"usage":{"input_tokens":50,"output_tokens":18,"total_tokens":68}}}\n\n'
    seed rsp-compat '1 5' 'data: '"$r"'output_text.delta","delta":"Hi"}\n\ndata: '"$r"'output_item.added","item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"f","arguments":""}}\n\ndata: '"$r"'function_call_arguments.delta","item_id":"fc_1","delta":"{\\"a\\":"}\n\ndata: '"$r"'function_call_arguments.delta","delta":"1}"}\n\ndata: '"$r"'output_item.done","item":{"type":"function_call","call_id":"call_2","name":"g","arguments":{"b":2}}}\n\ndata: '"$r"'completed","response":{"output":[{"type":"function_call","call_id":"call_3","name":"h","arguments":"{}"}],"usage":{"input_tokens":1,"output_tokens":1}}}\n\ndata: [DONE]\n\n'
    seed rsp-incomplete '1 0' 'event: response.output_text.delta\ndata: '"$r"'output_text.delta","output_index":0,"delta":"So far"}\n\nevent: response.refusal.delta\ndata: '"$r"'refusal.delta","delta":"no"}\n\nevent: response.incomplete\ndata: '"$r"'incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[{"type":"message","content":[{"type":"output_text","text":"So far"}]}]}}\n\n'
    seed rsp-failed '1 0' 'event: response.failed\ndata: '"$r"'failed","response":{"status":"failed","error":{"code":"server_error","message":"The server had an error"}}}\n\n'
    seed rsp-error '1 2' 'event: response.output_text.delta\ndata: '"$r"'output_text.delta","delta":"Before the error. "}\n\nevent: error\ndata: {"type":"error","code":"server_error","message":"Overloaded","param":null,"sequence_number":3}\n\n'
    seed rsp-untyped '21 0' 'event: response.output_text.delta\ndata: {"delta":"x"}\n\ndata: {"output_index":1}\n\ndata: {"error":{"message":"nested"}}\n\n'
    # Anthropic Messages
    a='{"type":"content_block_'
    ms='event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}\n\n'
    seed ant-text '2 0' "$ms"'event: content_block_start\ndata: '"$a"'start","index":0,"content_block":{"type":"text","text":""}}\n\nevent: ping\ndata: {"type": "ping"}\n\nevent: content_block_delta\ndata: '"$a"'delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\nevent: content_block_stop\ndata: '"$a"'stop","index":0}\n\nevent: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    seed ant-tools '2 13' "$ms"'event: content_block_start\ndata: '"$a"'start","index":0,"content_block":{"type":"text","text":""}}\n\nevent: content_block_delta\ndata: '"$a"'delta","index":0,"delta":{"type":"text_delta","text":"Let me check"}}\n\nevent: content_block_stop\ndata: '"$a"'stop","index":0}\n\nevent: content_block_start\ndata: '"$a"'start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}\n\nevent: content_block_delta\ndata: '"$a"'delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}\n\nevent: content_block_delta\ndata: '"$a"'delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"Par"}}\n\nevent: content_block_delta\ndata: '"$a"'delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\\"}"}}\n\nevent: content_block_stop\ndata: '"$a"'stop","index":1}\n\nevent: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    seed ant-error '2 0' "$ms"'event: content_block_delta\ndata: '"$a"'delta","index":0,"delta":{"type":"text_delta","text":"Before the error. "}}\n\nevent: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    seed ant-compat '22 4' 'data: '"$a"'start","content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}}\r\n\r\ndata: '"$a"'delta","delta":{"type":"input_json_delta","partial_json":"{\\"b\\":2}"}}\r\n\r\ndata: '"$a"'start","index":3,"content_block":{"type":"server_tool_use","id":"srv","name":"web"}}\r\n\r\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":3,"output_tokens":4}}\r\n\r\n'
    seed ant-cut '2 1' "$ms"'event: content_block_delta\ndata: '"$a"'delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}\n\n'
    # slots out of range, usage at the edges
    seed chat-range '0 0' 'data: {"choices":[{"delta":{"tool_calls":[{"index":63,"id":"c","function":{"name":"f","arguments":"{}"}},{"index":64}]}}],"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":-1}}\n\n'
    seed rsp-range '1 0' 'data: '"$r"'function_call_arguments.delta","output_index":-2,"delta":"x"}\n\n'
    seed rsp-usage '1 0' 'data: '"$r"'completed","response":{"output":[{},{"type":"function_call","name":"f","arguments":{"a":1}}],"usage":{"input_tokens":9223372036854775807,"output_tokens":-1}}}\n\n'
    seed ant-range '2 0' 'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9223372036854775807,"cache_creation_input_tokens":0,"cache_read_input_tokens":-9223372036854775807,"output_tokens":-1}}}\n\nevent: content_block_start\ndata: '"$a"'start","index":64,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}\n\n'
    # base64
    seed b64-std '3' 'aGVsbG8gd29ybGQ='
    seed b64-url '3' 'SGk_-w'
    seed b64-pad '3' 'YQ=='
    seed b64-bad '3' 'a=b='
    # request builders
    seed req-full '4' '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image","mime_type":"image/png","data":"iVBORw0KGgo="}]},{"role":"assistant","content":"Let me check.","tool_calls":[{"id":"call_1","name":"get_weather","arguments":"{\\"location\\":\\"Paris\\"}"}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"},{"role":"user","content":"thanks"}],"tools":[{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}],"tool_choice":"get_weather","max_tokens":100}'
    seed req-merge '4' '{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","name":"f","arguments":"not json"},{"id":"c2","name":"g"}]},{"role":"user","content":"interject"},{"role":"tool","tool_call_id":"c1","content":"r1"},{"role":"tool","tool_call_id":"c2","content":""},{"role":"system","content":"late"},{"role":"system","content":""}],"tools":[{"name":"f"},{"name":"g","parameters":[]}]}'
    seed req-bad '4' '{"messages":[{"role":"user","content":[{"type":"image"}]},{"role":"robot","content":"x"}],"tools":[{"description":"no name"}]}'
    seed req-nul '9' '{"messages":[{"role":"user","content":"a\\u0000b"}],"tool_choice":"x\\u0000y","tools":[{"name":"n\\u0000"}]}'
}

seed_multipart() {
    # seeds (see fuzz_multipart.c): byte 0 = piece size - 1 (bits 0-5), tight limits (bit 6),
    # stopping callbacks (bit 7); then a body with boundary "bnd". Written when missing.
    mkdir -p fuzz/corpus-multipart
    seed() { [ -e "fuzz/corpus-multipart/$1" ] || printf '%b' "$2" > "fuzz/corpus-multipart/$1"; }
    cd='Content-Disposition: form-data; name='
    seed chrome '\004--bnd\r\n'"$cd"'"thread_id"\r\n\r\nthr_1\r\n--bnd\r\n'"$cd"'"file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n\0\r\n--bn\r\n-\r\r\n--bndx\n--bnd\r--\r\n--bnd--\r\n'
    seed firefox '\002--bnd\r\n'"$cd"'"text"\r\n\r\ntext default\r\n--bnd\r\n'"$cd"'"file2"; filename=""\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--bnd--'
    seed names '\011--bnd  \r\n'"$cd"'f; filename="a \\"q\\" \\\\ C:\\\\x"; filename*=UTF-8'"''"'%e2%82%ac.txt\r\nContent-Type:\r\n\r\nx\r\n--bnd\r\ncontent-disposition: form-data;\r\n\tNAME="g"; filename*=ISO-8859-1'"''"'%A3\r\n\r\n\r\n--bnd--epilogue'
    seed preamble '\077junk --bnd\r\n\r--bnd\n--bnd\r\n-\r\n--bnd\t\r\n'"$cd"'a\r\n\r\n1\r\n--bnd--'
    seed tight '\100pre\r\n--bnd\r\n'"$cd"'a\r\n\r\n\r\n--bnd\r\n'"$cd"'b\r\n\r\n\r\n--bnd\r\n'"$cd"'c\r\n\r\n\r\n--bnd\r\n'"$cd"'d\r\n\r\n\r\n--bnd--'
    seed stop '\201--bnd\r\n'"$cd"'a; filename="!x"\r\n\r\nv\r\n--bnd\r\n'"$cd"'"!b"\r\n\r\n\r\n--bnd--'
    seed bad '\003--bnd\r\n'"$cd"'f\r\nno colon\r\n\r\n\r\n--bnd--'
    seed truncated '\000--bnd\r\n'"$cd"'f\r\n\r\nabc\r\n--bn'
}

seed_sniff() {
    # seeds (see fuzz_sniff.c): byte 0 = piece size - 1 (bits 0-5) and the cut; then the content
    # (also a name and a declared type up to its first NUL). Octal escapes: dash's printf has
    # no \x. Written when missing.
    mkdir -p fuzz/corpus-sniff
    seed() { [ -e "fuzz/corpus-sniff/$1" ] || printf '%b' "$2" > "fuzz/corpus-sniff/$1"; }
    z='\0000'
    seed png '\003\0211PNG\r\n\0032\n'"$z$z$z"'\rIHDR'"$z$z$z"'\0001'
    seed jpeg '\010\0377\0330\0377\0340'"$z"'\0020JFIF'"$z"
    seed gif '\001GIF89a\0001'"$z"'\0001'"$z"'\0200'"$z"
    seed webp '\002RIFF\0032'"$z$z$z"'WEBPVP8L\0015'"$z$z$z"
    seed bmp '\005BM:'"$z$z$z$z$z$z$z"'6'"$z$z$z"'('"$z$z$z"'\0001'"$z$z$z"
    seed pdf '\007%PDF-1.7\n%\0342\0343\0317\0323\n1 0 obj\n'
    seed zip '\011PK\0003\0004\0024'"$z"
    seed gzip '\012\0037\0213\0010'"$z"
    seed text '\004h\0303\0251llo \0342\0202\0254 \0360\0237\0230\0200\n\0357\0273\0277'
    seed badutf8 '\006a\0300\0200b\0355\0240\0200c\0364\0220\0200\0200d\0342\0202'
    seed path '\000../../etc/pa ss\\wd.txt. '
    seed winpath '\013C:\\x\\r\0303\0251sum\0303\0251 "q" 100%.txt'
    seed bidi '\000a\0342\0200\0256txt.exe'
    seed ctrl '\000a\0001b\0302\0205'
    seed types '\000IMAGE/PNG'
    seed svg '\000image/svg+xml'
}

# A long run of harness $1 for $secs seconds: new inputs go to the scratch corpus, the committed
# one and the seeds are read too.
run() {
    harness_opts "$1"
    "seed_$1"
    # shellcheck disable=SC2086,SC2046
    "$out/fuzz_$1" -max_total_time="$secs" -max_len="$max_len" -timeout="$timeout" \
        -dict="fuzz/dict/$1.dict" -artifact_prefix="fuzz/crash-$1-" ${FUZZ_FLAGS:-} \
        "fuzz/corpus-$1" $(existing "fuzz/corpus/$1" $seeds)
}

# The committed corpus keeps inputs of at most merge_len bytes (longer ones are cut, then kept
# only when the cut still adds a feature): the same coverage (cov) in a fraction of the bytes;
# only some of the long-input features (ft) are left to the fuzzer to find again.
merge() {
    harness_opts "$1"
    new=$(mktemp -d)
    # shellcheck disable=SC2086,SC2046
    if ! "$out/fuzz_$1" -merge=1 -max_len="$merge_len" -timeout="$timeout" \
        -artifact_prefix="fuzz/crash-$1-" "$new" \
        $(existing "fuzz/corpus/$1" "fuzz/corpus-$1" $seeds) > "$new.log" 2>&1; then
        tail -n 30 "$new.log" >&2
        rm -rf "$new" "$new.log"
        echo "merge $1: failed" >&2
        return 1
    fi
    rm -rf "fuzz/corpus/$1" "$new.log"
    mkdir -p fuzz/corpus
    mv "$new" "fuzz/corpus/$1"
    chmod 755 "fuzz/corpus/$1"
    cov=$("$out/fuzz_$1" -runs=0 -max_len="$max_len" "fuzz/corpus/$1" 2>&1 |
        sed -n 's/.*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/p')
    echo "merge $1: $(count "fuzz/corpus/$1") inputs, $(cat "fuzz/corpus/$1"/* | wc -c) bytes, $cov"
}

# CI: every harness (or those named after $1) for $1 seconds from a copy of
# fuzz/corpus/HARNESS/, one result line each.
ci() {
    secs=$1
    shift
    which=${*:-$harnesses}
    for h in $which; do harness_opts "$h"; done
    targets=""
    for h in $which; do targets="$targets $out/fuzz_$h"; done
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    art=$out/ci-artifacts
    rm -rf "$art"
    mkdir -p "$art"
    passed=0 failed=0
    t0=$(date +%s)
    # everything at once for the parallel compiles; then each harness on its own, so one that
    # does not build fails alone (a no-op for those that did)
    # shellcheck disable=SC2086
    make -s -k -f fuzz/fuzz.mk -j"$jobs" OUT="$out" $targets > "$tmp/build.log" 2>&1 || true
    echo "fuzz: built in $(($(date +%s) - t0)) s"
    for h in $which; do
        harness_opts "$h"
        if ! make -s -f fuzz/fuzz.mk OUT="$out" "$out/fuzz_$h" > "$tmp/build-$h.log" 2>&1; then
            echo "fuzz $h: FAIL (build)"
            tail -n 30 "$tmp/build-$h.log"
            failed=$((failed + 1))
            continue
        fi
        mkdir "$tmp/$h"
        if [ -d "fuzz/corpus/$h" ]; then cp -R "fuzz/corpus/$h/." "$tmp/$h/"; fi
        n0=$(count "$tmp/$h")
        rc=0
        "$out/fuzz_$h" -max_total_time="$secs" -max_len="$max_len" -timeout="$timeout" \
            -dict="fuzz/dict/$h.dict" -artifact_prefix="$art/$h-" -print_final_stats=1 \
            "$tmp/$h" > "$tmp/$h.log" 2>&1 || rc=$?
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$h.log" | tail -n 1)
        cov=$(grep -E '^#[0-9]+.*cov: ' "$tmp/$h.log" | tail -n 1 |
            sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/p')
        if [ "$rc" -eq 0 ]; then
            echo "fuzz $h: ok (${runs:-?} runs in $secs s, ${cov:-cov ?}, corpus $n0 ->" \
                "$(count "$tmp/$h"))"
            passed=$((passed + 1))
        else
            unit=$(sed -n 's/.*Test unit written to //p' "$tmp/$h.log" | tail -n 1)
            echo "fuzz $h: FAIL (exit $rc after ${runs:-?} runs; input: ${unit:-none saved})"
            grep -v -E '^#[0-9]+|^INFO: |^stat::' "$tmp/$h.log" | tail -n 60
            failed=$((failed + 1))
        fi
    done
    echo "fuzz: $passed passed, $failed failed ($(($(date +%s) - t0)) s)"
    [ "$failed" -eq 0 ]
}

mode=${1:-60}
case "$mode" in
ci)
    shift
    secs=${1:-8}
    case "$secs" in *[!0-9]* | "") usage ;; esac
    [ $# -gt 0 ] && shift
    ci "$secs" "$@"
    exit
    ;;
merge)
    which=${2:-all}
    [ "$which" = all ] && which=$harnesses
    # shellcheck disable=SC2086
    build $which
    for h in $which; do merge "$h"; done
    exit
    ;;
*[!0-9]* | "") usage ;;
esac
secs=$mode
which=${2:-all}
[ "$which" = all ] && which=$harnesses
for h in $which; do harness_opts "$h"; done
# shellcheck disable=SC2086
build $which
[ "$secs" -gt 0 ] || exit 0
for h in $which; do run "$h"; done
