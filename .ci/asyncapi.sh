#!/usr/bin/env bash
# Validates asyncapi/asyncapi.yaml with the official AsyncAPI parser
# (@asyncapi/parser, pinned in asyncapi/package-lock.json): any diagnostic of
# severity error fails. tests/api/asyncapi_spec.rs checks the same document
# against the server's message types and real frames. Called by .ci/run;
# needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/../asyncapi"

# --ignore-scripts: the parser needs no install step (one of its dependencies
# would otherwise phone home from a postinstall script).
npm ci --ignore-scripts --silent --no-audit --no-fund >/dev/null
node validate.mjs asyncapi.yaml
