#!/bin/sh
# Builds the HTTP parser fuzzer (libFuzzer + ASan/UBSan) and runs it for N seconds (default 60).
# Usage: fuzz/build.sh [seconds]. Corpus: fuzz/corpus-http/ (git-ignored); crashes: fuzz/crash-*.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
out=build-fuzz
mkdir -p "$out" fuzz/corpus-http

# llhttp is third-party code: no warnings from it
for f in api http llhttp; do
    clang -g -O1 -fsanitize=fuzzer-no-link,address,undefined -w -I/usr/share/include/llhttp \
        -c /usr/share/llhttp/$f.c -o "$out/llhttp_$f.o"
done
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Werror \
    -Isrc -I/usr/share/include/llhttp $(pkg-config --cflags libuv jansson) \
    fuzz/fuzz_http.c src/http/*.c src/util/*.c "$out"/llhttp_*.o \
    $(pkg-config --libs libuv jansson) -lm -o "$out/fuzz_http"

# seeds: first byte is the read size
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
exec "$out/fuzz_http" -max_total_time="$secs" -max_len=4096 -dict="$out/http.dict" \
    -artifact_prefix=fuzz/crash- fuzz/corpus-http
