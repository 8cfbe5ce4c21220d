#!/usr/bin/env bash
# The customer chat (/) and the agent console (/agent) end to end in headless
# Chromium: e2e/handoff.test.mjs drives Debian's chromium with playwright-core
# (pinned in e2e/package-lock.json; never a browser download) against the
# debug binary with the echo model and in-memory stores (Redis with
# E2E_REDIS_URL). Called by .ci/run; needs node >= 20 and npm.
#
# Failures leave screenshots and page HTML in e2e/artifacts/; success writes
# docs/screenshots/customer.png and agent.png, the README's pictures.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
BIN="${CHATBOT_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/chatbot-server}"
ARTIFACTS="$PWD/e2e/artifacts"

if [ ! -x "$CHROMIUM" ]; then
  echo "e2e: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "e2e: node >= 20 is required (playwright-core)" >&2; exit 1; }

cargo build --quiet
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)

work="$(mktemp -d)"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop_server EXIT INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

# The server's whole configuration, shared with the `users set-role` command.
# Answers come one word every 150 ms, slow enough to reload in the middle.
config=(
  PATH="$PATH" HOME="$work" HOST=127.0.0.1 PORT="$port" RUST_LOG=warn
  JWT_SECRET="e2e-ci-secret-0123456789abcdef0123456789"
  SQLITE_PATH="$work/users.db" ECHO_TOKEN_DELAY=150ms
)
if [ -n "${E2E_REDIS_URL:-}" ]; then
  config+=(REDIS_URL="$E2E_REDIS_URL")
fi

(cd "$work" && exec env -i "${config[@]}" "$BIN") >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/health" >/dev/null

# The agent: an ordinary registration, then the operator's command.
agent_user=Ann
agent_password="agent-password-e2e"
curl -fsS -o /dev/null -X POST "$base/api/auth/register" -H 'content-type: application/json' \
  -d "{\"username\":\"$agent_user\",\"email\":\"ann@example.com\",\"password\":\"$agent_password\"}"
(cd "$work" && env -i "${config[@]}" "$BIN" users set-role "$agent_user" agent)

rm -rf "$ARTIFACTS"
status=0
BASE_URL="$base" AGENT_USER="$agent_user" AGENT_PASSWORD="$agent_password" \
  CHROMIUM="$CHROMIUM" ARTIFACTS="$ARTIFACTS" SCREENSHOTS="$PWD/docs/screenshots" \
  node --test --test-reporter=spec e2e/handoff.test.mjs || status=$?

if [ "$status" -ne 0 ]; then
  mkdir -p "$ARTIFACTS"
  cp "$work/server.log" "$ARTIFACTS/server.log"
  echo "e2e: FAILED; screenshots, page HTML and the server log are in e2e/artifacts/" >&2
  tail -n 30 "$work/server.log" >&2
fi
exit "$status"
