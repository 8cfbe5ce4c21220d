#!/usr/bin/env bash
# The TypeScript client SDK (clients/typescript, package chatbot-server-client):
# installs its pinned tools (package-lock.json), checks that the committed
# generated types and browser bundle are what the specs and sources give now
# (drift), then runs its tests against the real server binary (CHATBOT_BIN,
# else the debug one cargo test built) and checks that `npm pack` gives a
# package. Called by .ci/run; needs node >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${CHATBOT_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/chatbot-server}"
if [ ! -x "$BIN" ]; then cargo build --quiet; fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "sdk: node >= 20 is required" >&2; exit 1; }

cd clients/typescript
npm ci --silent --no-audit --no-fund
echo "sdk: drift of the generated types and the browser bundle"
npm run --silent check
echo "sdk: tests against $BIN"
CHATBOT_SERVER_BIN="$BIN" npm test --silent
echo "sdk: npm pack"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" >/dev/null
files="$(tar -tzf "$work"/chatbot-server-client-*.tgz)"
for f in package/dist/index.js package/dist/index.d.ts package/browser/chatbot-server-client.js; do
  grep -qx "$f" <<<"$files" || { echo "sdk: the package lacks $f" >&2; exit 1; }
done
echo "sdk: ok"
