#!/usr/bin/env bash
# Long randomized runs of the hostile-input properties of test/security (not part of npm test).
#
# Each round runs test/security with a fresh random seed and FUZZ_SCALE times the runs of
# `npm test`; rounds follow each other until FUZZ_SECONDS have passed. Every round prints its
# seed first, so a failure (or a hang, which counts as one) can be replayed with the line it
# prints. Everything happens on the loopback interface: the tests bind 127.0.0.1, port 0.
#
#   FUZZ_SECONDS        time budget; no round starts after it (default 120)
#   FUZZ_SCALE          runs per property, as a multiple of npm test's (default 5)
#   FUZZ_SEED           replay: one round with this seed, then stop
#   FUZZ_ROUND_TIMEOUT  seconds after which a round counts as hung (default 900)
#   extra arguments     passed to vitest (e.g. a single file: test/security/smuggling.test.ts)
set -euo pipefail
cd "$(dirname "$0")/.."
# Node 24 and vitest from the project, as npm run would give them.
export PATH="$PWD/node_modules/.bin:$PATH"

seconds=${FUZZ_SECONDS:-120}
scale=${FUZZ_SCALE:-5}
round_timeout=${FUZZ_ROUND_TIMEOUT:-900}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(test/security); fi

run_round() {
  local seed=$1
  echo "== fuzz round $2: FUZZ_SEED=$seed FUZZ_SCALE=$scale ($(date -u +%H:%M:%S))"
  local status=0
  FUZZ_SEED=$seed FUZZ_SCALE=$scale timeout --kill-after=10 "$round_timeout" \
    vitest run "${targets[@]}" --testTimeout=$((round_timeout * 1000)) --hookTimeout=60000 || status=$?
  if [ "$status" -ne 0 ]; then
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
      echo "!! round $2 hung for ${round_timeout}s"
    fi
    echo "!! fuzz failure; replay with:"
    echo "   FUZZ_SEED=$seed FUZZ_SCALE=$scale npx vitest run ${targets[*]} --testTimeout=$((round_timeout * 1000))"
    exit 1
  fi
}

echo "node $(node --version); budget ${seconds}s; scale ${scale}x"

if [ -n "${FUZZ_SEED:-}" ]; then
  run_round "$FUZZ_SEED" replay
  exit 0
fi

start=$(date +%s)
round=0
while [ $(($(date +%s) - start)) -lt "$seconds" ]; do
  round=$((round + 1))
  run_round $(((RANDOM << 15) | RANDOM)) "$round"
done
echo "== ${round} rounds, no failure, in $(($(date +%s) - start))s"
