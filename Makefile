# Thin wrapper over Meson so the README's two commands work on a fresh Debian machine.
BUILD      ?= build
BUILD_ASAN ?= build-asan
DATA_DIR   ?= ./data

.PHONY: all deps build build-asan run test test-fast unit e2e bench fuzz fuzz-ci fuzz-merge clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

$(BUILD_ASAN)/build.ninja:
	meson setup $(BUILD_ASAN) -Db_sanitize=address,undefined -Db_lundef=false

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

# Runs the server with its embedded defaults: SQLite under ./data, the offline demo model.
run: build
	$(BUILD)/chatkitd demo --data-dir $(DATA_DIR)
	$(BUILD)/chatkitd serve --data-dir $(DATA_DIR)

# Every test: unit tests (plain, under valgrind, under ASan/UBSan) and the end-to-end suite
# against the ASan/UBSan binary. Ends with "N passed, N failed".
test: build build-asan
	@scripts/test.sh

# Unit + e2e on the plain build only (quicker while developing).
test-fast: build
	@FAST=1 scripts/test.sh

bench:
	bench/run.sh

# fuzz/build.sh: every libFuzzer harness for 60 s (scratch corpora fuzz/corpus-*/)
fuzz:
	fuzz/build.sh 60

# What `make test` runs: each harness for a few seconds from the committed fuzz/corpus/
fuzz-ci:
	fuzz/build.sh ci

# Minimizes the scratch corpora into the committed fuzz/corpus/ (after a long run)
fuzz-merge:
	fuzz/build.sh merge

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) build-release
