#!/usr/bin/env bash
# Benchmarks of effect-smtp against the peer libraries, in one run (see bench/README.md).
# Never part of `npm test`. Run through `npm run bench [-- --reps 5 --profile …]`, which puts
# node_modules/.bin (with Node 24) first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh # Postfix's smtp-source and smtp-sink
echo "node $(node --version)" >&2
exec node --disable-warning=ExperimentalWarning bench/run.ts "$@"
