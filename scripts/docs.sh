#!/usr/bin/env bash
# The API reference, from the doc comments of the public modules (typedoc.json lists them).
# TypeDoc needs TypeScript's compiler API, which TypeScript 7 (the project's compiler) does not
# have, so it runs with a TypeScript 5.9 of its own from scripts/docs/, installed on first use.
#   bash scripts/docs.sh               writes docs/api/
#   bash scripts/docs.sh --emit none   only checks: every export documented, every link resolved
# Warnings are errors either way (typedoc.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x scripts/docs/node_modules/.bin/typedoc ]; then
  npm --prefix scripts/docs install --no-audit --no-fund
fi
exec scripts/docs/node_modules/.bin/typedoc --options typedoc.json --tsconfig tsconfig.build.json "$@"
