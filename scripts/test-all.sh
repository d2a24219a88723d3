#!/usr/bin/env bash
# The full test run (README: `npm run test:all`): the package suite on Node 20, 22 and 24, then the
# telemetry-stack suite against real collector/Prometheus/Alertmanager binaries built from the Go module
# proxy (cached), then a benchmark smoke. Every vitest run starts its own PostgreSQL.
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
