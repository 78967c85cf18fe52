#!/usr/bin/env bash
# The whole test suite: real peers installed, type check, docs check, then every test.
# Run through `npm test`, which puts node_modules/.bin (with Node 24) first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh
echo "node $(node --version)"
tsc --noEmit
# The published declarations build too (a type the d.ts cannot name fails only here).
declarations=$(mktemp -d)
trap 'rm -rf "$declarations"' EXIT
tsc -p tsconfig.build.json --emitDeclarationOnly --declarationMap false --outDir "$declarations"
# Every public export documented and every doc link resolved; nothing written (scripts/docs.sh).
bash scripts/docs.sh --emit none --logLevel Warn
knip --no-progress # no unused files, exports or dependencies
vitest run "$@"
