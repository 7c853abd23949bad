#!/usr/bin/env bash
# Installs what chatkitd needs to build and test on Debian 12.
# Idempotent: apt-get runs only when a package is missing.
set -euo pipefail

pkgs=(
  build-essential pkg-config meson ninja-build
  libuv1-dev node-llhttp libjansson-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev
  libcmocka-dev
  python3 python3-pytest python3-requests
  valgrind
)

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
