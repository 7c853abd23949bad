#!/usr/bin/env bash
# Installs what chatkitd needs to build and test on Debian 12.
# Idempotent: apt-get runs only when a package is missing, npm ci only when package-lock.json
# changed since the last install.
set -euo pipefail

pkgs=(
  build-essential pkg-config meson ninja-build
  libuv1-dev node-llhttp libjansson-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev
  libcmocka-dev
  python3 python3-pytest python3-requests
  valgrind
  chromium
  # the fuzz stage (fuzz/build.sh ci): clang, libFuzzer's runtime libclang_rt.fuzzer (in
  # libclang-rt-dev, which clang only recommends) and llvm-symbolizer for sanitizer stacks (llvm)
  clang libclang-rt-dev llvm
)
# node and npm run the MCP servers of the end-to-end tests (package.json). They usually come
# with the machine; Debian's packages are the fallback.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# MCP test fixtures (server-everything, the SDK for tests/fixtures/mcp_widgets.mjs) from
# package-lock.json. The stamp holds the hash of the lock file and package.json of the last
# successful `npm ci`, so an unchanged tree skips it.
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "deps: ERROR: node and npm are needed for the MCP test fixtures but are not on PATH" >&2
  exit 1
fi
root=$(cd "$(dirname "$0")/.." && pwd)
stamp=$root/node_modules/.chatkitd-npm-stamp
want=$(cat "$root/package-lock.json" "$root/package.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deps: npm ci (MCP test fixtures)" >&2
  if ! (cd "$root" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "deps: ERROR: npm ci failed" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
