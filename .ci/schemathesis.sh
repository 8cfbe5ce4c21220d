#!/usr/bin/env bash
# Fuzzes the live REST API against the spec it serves, with schemathesis:
# no 5xx, only documented statuses, content types and body shapes. Called by
# .ci/run after `cargo test`, which built target/debug/chatbot-server.
#
# SCHEMATHESIS_MAX_EXAMPLES (default 100) bounds the cases per operation and
# phase; the whole run takes a few minutes at most on a busy 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5 # works with Python 3.9-3.13 (CI has 3.11)
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
BIN="${CHATBOT_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/chatbot-server}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

[ -x "$BIN" ] || { echo "schemathesis: $BIN is missing; run cargo test first" >&2; exit 1; }

# The newest Python found, 3.12 or later when there is one: CPython 3.11.7
# fails inside hypothesis's lambda-source parsing ("SystemError: AST
# constructor recursion depth mismatch"), a runtime error schemathesis then
# reports against whichever operation it was testing. SCHEMATHESIS_PYTHON wins.
pick_python() {
  local candidates=("${SCHEMATHESIS_PYTHON:-}" python3.13 python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.1[3-9]*/bin/python3 "$(pyenv root)"/versions/3.12*/bin/python3)
  fi
  candidates+=(python3)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null && { echo "$py"; return; }
  done
  echo "schemathesis: no Python 3.9 or later found" >&2
  exit 1
}
python="$(pick_python)"
py_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# A virtualenv per pinned version and Python, kept between runs.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/chatbot-server-ci/schemathesis-$VERSION-py$py_version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "schemathesis: installing schemathesis==$VERSION into $venv ($python)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

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

# A clean environment (no REDIS_URL, no .env: in-memory stores), SQLite users,
# the echo model, and every abuse limit off so the fuzzer is not throttled.
(
  cd "$work"
  exec env -i PATH="$PATH" HOME="$work" \
    HOST=127.0.0.1 PORT="$port" RUST_LOG=warn \
    JWT_SECRET="schemathesis-ci-secret-0123456789abcdef" \
    SQLITE_PATH="$work/users.db" ECHO_TOKEN_DELAY=1ms \
    LOGIN_MAX_FAILURES_PER_ACCOUNT=0 LOGIN_MAX_FAILURES_PER_IP=0 \
    LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY=0 REGISTER_PER_IP_PER_HOUR=0 \
    VERIFY_PER_IP_PER_MINUTE=0 WS_TICKETS_PER_USER_PER_MINUTE=0 \
    CHAT_MESSAGES_PER_MINUTE=0 CHAT_MAX_CONCURRENT_PER_USER=0 \
    WS_MAX_CONNECTIONS_PER_USER=0 WS_MAX_CONNECTIONS_PER_IP=0 \
    SESSIONS_MAX_PER_USER=0 UNAUTH_CONNECTIONS_PER_IP=0 \
    "$BIN"
) >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/health" >/dev/null

# A user and a bearer token for the fuzzer (logout and logout-all get their own).
token_of() {
  curl -fsS -X POST "$base/api/auth/register" -H 'content-type: application/json' \
    -d "{\"username\":\"$1\",\"email\":\"$1@example.com\",\"password\":\"fuzzing-password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

run() {
  # In the temp dir: schemathesis keeps a .schemathesis/ cache where it runs.
  (cd "$work" && "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --seed 20261204 \
    --workers 2 \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    "$@")
}

status=0
echo "schemathesis: every operation but logout and logout-all"
run -H "Authorization: Bearer $(token_of fuzzer)" \
  --exclude-operation-id logout --exclude-operation-id logoutAll || status=$?
# These revoke the token they are called with: a token of their own, after the rest.
echo "schemathesis: logout and logout-all"
run -H "Authorization: Bearer $(token_of leaver)" \
  --include-operation-id logout --include-operation-id logoutAll || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis: FAILED (server log follows)" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
