#!/bin/sh
# The MCP conformance suite's client scenarios against chatkitd's MCP client (src/mcp/ over
# Streamable HTTP, driven by the test program build/mcp_driver). Not part of `make test`:
# it installs Node 22 and @modelcontextprotocol/conformance from npm into a scratch directory
# outside the repository (the suite needs Node >= 22; the repo's tests run on the system node).
#
#   scripts/mcp-conformance.sh [SCENARIO...]
#     default scenarios: initialize tools_call elicitation-sep1034-client-defaults sse-retry
#   env: CONF_DIR   scratch directory (default ${TMPDIR:-/tmp}/chatkitd-conformance)
#        BUILD      build directory holding mcp_driver (default ./build; e.g. build-asan)
#        CONFORMANCE_VERSION (default 0.1.16)
#
# Exit status 0 when every scenario passed or failed as expected: the expected failures are
# listed below (none since elicitation landed).
# Results (checks.json per scenario) go to $CONF_DIR/results. See docs/mcp.md.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
CONF_DIR=${CONF_DIR:-${TMPDIR:-/tmp}/chatkitd-conformance}
BUILD=${BUILD:-$REPO/build}
VERSION=${CONFORMANCE_VERSION:-0.1.16}
DRIVER=$BUILD/mcp_driver

case "$CONF_DIR" in
"$REPO" | "$REPO"/*) echo "CONF_DIR must be outside the repository" >&2; exit 2 ;;
esac
if [ ! -x "$DRIVER" ]; then
    echo "no $DRIVER: build first (ninja -C $BUILD)" >&2
    exit 2
fi

NODE22=$CONF_DIR/node_modules/.bin/node
CONF=$CONF_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js
if [ ! -x "$NODE22" ] || [ ! -f "$CONF" ] ||
    ! grep -q "\"version\": \"$VERSION\"" "$CONF_DIR/node_modules/@modelcontextprotocol/conformance/package.json"; then
    mkdir -p "$CONF_DIR"
    (cd "$CONF_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund "node@22" "@modelcontextprotocol/conformance@$VERSION")
fi

BASELINE=$CONF_DIR/expected-failures.yml
cat >"$BASELINE" <<'EOF'
client: []
EOF

if [ $# -eq 0 ]; then
    set -- initialize tools_call elicitation-sep1034-client-defaults sse-retry
fi

status=0
summary=""
for sc in "$@"; do
    echo "=== $sc"
    # calls time out after 5 s (the runner gives a client 30 s)
    if "$NODE22" "$CONF" client --command "$DRIVER --timeout-ms 5000" --scenario "$sc" \
        --expected-failures "$BASELINE" -o "$CONF_DIR/results"; then
        r=passed
        grep -q "^  - $sc\$" "$BASELINE" && r="failed, as expected"
    else
        r=FAILED
        status=1
    fi
    summary="$summary
$sc: $r"
done
echo
echo "=== conformance $VERSION, driver $DRIVER:$summary"
exit $status
