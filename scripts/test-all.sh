#!/usr/bin/env bash
# The full test run (README: `npm run test:all`): the package suite on Node 20, 22 and 24, the support-matrix
# suite on each of them, then the telemetry-stack suite against real collector/Prometheus/Alertmanager
# binaries built from the Go module proxy (cached), then a benchmark smoke. Every vitest run starts its own PostgreSQL.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache/results
rm -f .cache/results/*.json
npm run build && npm run typecheck || exit 1

status=0
suite() { # label, command...
  local label=$1; shift
  echo "== $label"
  "$@" --reporter=default --reporter=json --outputFile=".cache/results/$label.json" || status=1
}

VITEST=node_modules/vitest/vitest.mjs
suite "node$(node -p 'process.versions.node.split(".")[0]')" node "$VITEST" run
for v in ${POOLSCOPE_EXTRA_NODE_VERSIONS:-22 24}; do
  suite "node$v" npx -y -p "node@$v" node "$VITEST" run
done

# The support matrix: every pool library's app, and the pg / pg-pool versions we claim, once per Node version.
# On the Node 20 run the version fixtures run on 20.6.0, the engines floor (vitest itself needs a newer 20).
if [ -f vitest.matrix.config.ts ] && [ "${POOLSCOPE_SKIP_MATRIX:-0}" != 1 ]; then
  rm -f .cache/matrix/saturation.jsonl
  suite "matrix-node$(node -p 'process.versions.node.split(".")[0]')" \
    env POOLSCOPE_MATRIX_NODE="${POOLSCOPE_MATRIX_FLOOR:-20.6.0}" node "$VITEST" run --config vitest.matrix.config.ts
  for v in ${POOLSCOPE_EXTRA_NODE_VERSIONS:-22 24}; do
    suite "matrix-node$v" npx -y -p "node@$v" node "$VITEST" run --config vitest.matrix.config.ts
  done
fi

if [ -f vitest.stack.config.ts ] && [ "${POOLSCOPE_SKIP_STACK:-0}" != 1 ]; then
  { bash scripts/build-tools.sh && bash scripts/build-dashboard-linter.sh && bash scripts/build-compose-validator.sh; } || status=1
  suite stack node "$VITEST" run --config vitest.stack.config.ts
fi

if [ -f bench/run.mjs ] && [ "${POOLSCOPE_SKIP_BENCH:-0}" != 1 ]; then
  echo "== bench smoke"
  node bench/run.mjs --smoke || status=1
fi

node scripts/summarize-results.mjs .cache/results || status=1
exit $status
