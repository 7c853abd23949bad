# The libFuzzer harnesses, built by fuzz/build.sh (make -f fuzz/fuzz.mk -j<cores> OUT=build-fuzz).
# Every source is compiled once, with ASan/UBSan and libFuzzer's coverage, into
# $(OUT)/obj/<path>.o and shared by the harnesses that link it; -MMD dependency files make a
# second build incremental, and -j spreads the compiles over the cores.
OUT ?= build-fuzz
CC := clang
SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# libcurl: headers only (src/llm/fetch.c loads it with dlopen); no harness calls it
CPPFLAGS := -Isrc -I/usr/share/include/llhttp -D_GNU_SOURCE \
	$(shell pkg-config --cflags libuv jansson sqlite3) \
	$(shell pkg-config --cflags libcurl 2>/dev/null)
CFLAGS := -g -O1 $(SAN) -fsanitize=fuzzer-no-link -std=gnu11 -Wall -Wextra \
	-Wno-unused-parameter -Werror
LDFLAGS := $(SAN) -fsanitize=fuzzer

HARNESSES := http protocol sse llm multipart sniff
obj = $(patsubst %.c,$(OUT)/obj/%.o,$(1))
LLHTTP := $(addprefix $(OUT)/obj/llhttp/,api.o http.o llhttp.o)

http_SRC := fuzz/fuzz_http.c $(wildcard src/http/*.c src/util/*.c)
http_LIBS := $(shell pkg-config --libs libuv jansson) -lm
protocol_SRC := fuzz/fuzz_protocol.c $(filter-out src/main.c,$(wildcard src/*.c src/*/*.c))
protocol_LIBS := $(shell pkg-config --libs libuv jansson sqlite3) -lpthread -ldl -lm
sse_SRC := fuzz/fuzz_sse.c src/llm/sse.c src/util/buf.c src/util/log.c
# libuv: headers only here (provider.h names uv_loop_t)
llm_SRC := fuzz/fuzz_llm.c src/llm/decode.c src/llm/openai.c src/llm/responses.c \
	src/llm/anthropic.c src/llm/sse.c src/util/buf.c src/util/log.c src/util/base64.c
llm_LIBS := $(shell pkg-config --libs jansson) -lm
multipart_SRC := fuzz/fuzz_multipart.c src/files/multipart.c
sniff_SRC := fuzz/fuzz_sniff.c src/files/sniff.c

.PHONY: all
all: $(addprefix $(OUT)/fuzz_,$(HARNESSES))

$(OUT)/fuzz_http: $(call obj,$(http_SRC)) $(LLHTTP)
	$(CC) $(LDFLAGS) $^ $(http_LIBS) -o $@
$(OUT)/fuzz_protocol: $(call obj,$(protocol_SRC)) $(LLHTTP)
	$(CC) $(LDFLAGS) $^ $(protocol_LIBS) -o $@
$(OUT)/fuzz_sse: $(call obj,$(sse_SRC))
	$(CC) $(LDFLAGS) $^ -o $@
$(OUT)/fuzz_llm: $(call obj,$(llm_SRC))
	$(CC) $(LDFLAGS) $^ $(llm_LIBS) -o $@
$(OUT)/fuzz_multipart: $(call obj,$(multipart_SRC))
	$(CC) $(LDFLAGS) $^ -o $@
$(OUT)/fuzz_sniff: $(call obj,$(sniff_SRC))
	$(CC) $(LDFLAGS) $^ -o $@

$(OUT)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# llhttp is third-party code: no warnings from it; strict mode, as meson.build builds it
$(OUT)/obj/llhttp/%.o: /usr/share/llhttp/%.c fuzz/fuzz.mk
	@mkdir -p $(@D)
	$(CC) -g -O1 $(SAN) -fsanitize=fuzzer-no-link -w -DLLHTTP_STRICT_MODE=1 \
	    -I/usr/share/include/llhttp -c $< -o $@

# a failed compile or link leaves no half-written target behind
.DELETE_ON_ERROR:

-include $(wildcard $(OUT)/obj/*/*.d $(OUT)/obj/*/*/*.d)
