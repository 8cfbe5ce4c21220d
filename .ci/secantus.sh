#!/usr/bin/env bash
# Starts SecantusDB, a MongoDB-wire server (PyPI `SecantusDB`, GPL-2.0: run
# as a separate process, never linked), on a free loopback port with in-memory
# storage, for the MongoDB contract suites and the Node.js migration test. No
# genuine `mongod` can be installed on the CI machines; production should run
# genuine MongoDB (the suites also run against a `mongo:7` container where a
# Docker engine answers).
#
# Prints shell assignments for `eval`: MONGODB_URI and SECANTUS_PID.
# The venv is cached per pinned version and Python, as schemathesis's is.
set -euo pipefail

VERSION=0.7.0b3

pick_python() {
  local candidates=("${SECANTUS_PYTHON:-}" python3.13 python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.1[3-9]*/bin/python3 "$(pyenv root)"/versions/3.12*/bin/python3)
  fi
  candidates+=(python3)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null && { echo "$py"; return; }
  done
  echo "secantus: no Python 3.10 or later found" >&2
  exit 1
}
python="$(pick_python)"
py_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/chatbot-server-ci/secantus-$VERSION-py$py_version"
if [ ! -x "$venv/bin/secantusd-py" ]; then
  echo "secantus: installing SecantusDB==$VERSION into $venv ($python)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$VERSION" >&2
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp -t secantus.XXXXXX.log)"
"$venv/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path :memory: >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if grep -q "listening on" "$log" 2>/dev/null; then
    echo "secantus: SecantusDB $VERSION on 127.0.0.1:$port (pid $pid, log $log)" >&2
    echo "MONGODB_URI=mongodb://127.0.0.1:$port/; SECANTUS_PID=$pid"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
echo "secantus: SecantusDB did not start; its log:" >&2
cat "$log" >&2
kill "$pid" 2>/dev/null || true
exit 1
