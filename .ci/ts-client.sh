#!/usr/bin/env bash
# Type-checks a small TypeScript client (.ci/ts-client/client.ts) against types
# that openapi-typescript generates from the committed spec, so the spec cannot
# silently lose what clients use (token, refreshToken, user.lastLogin, the
# error-code enums). Called by .ci/run; needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAPI_TYPESCRIPT=7.13.0
TYPESCRIPT=5.9.3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

npm install --silent --no-audit --no-fund --prefix "$work" \
  "openapi-typescript@$OPENAPI_TYPESCRIPT" "typescript@$TYPESCRIPT" >/dev/null
cp .ci/ts-client/client.ts "$work/client.ts"
"$work/node_modules/.bin/openapi-typescript" openapi/openapi.json --output "$work/api.d.ts"
"$work/node_modules/.bin/tsc" --noEmit --strict --target es2022 --module es2022 \
  --moduleResolution bundler --lib es2022,dom "$work/client.ts"
echo "ts-client: the generated types fit client.ts"
