#!/usr/bin/env bash
# Benchmarks of effect-smtp against the peer libraries, in one run (see bench/README.md).
# Never part of `npm test`. Run through `npm run bench [-- --reps 5 --only b --profile b …]`,
# which puts node_modules/.bin (with Node 24) first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh # Postfix's smtp-source and smtp-sink
# The package as it ships: the benchmark imports dist/.
npm run --silent build >&2
# 10,000 idle connections: as many open files in the server (and in the client holding them).
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
echo "node $(node --version), open files $(ulimit -n)" >&2
exec node --disable-warning=ExperimentalWarning bench/run.ts "$@"
