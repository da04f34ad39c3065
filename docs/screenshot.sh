#!/usr/bin/env bash
# Reproduce docs/mlflow-ui.png and docs/mlflow-ui-grouped.png: the MLflow UI's chart view of a
# benchmark's parent runs, with their best_so_far curves overlaid.
#
#   1. a small real benchmark (Branin, optuna vs random, 3 seeds x 20 trials) into a fresh SQLite store
#   2. a real `mlflow ui` on 127.0.0.1
#   3. headless Debian chromium (apt-get install -y chromium), driven by playwright-core (npm), opens
#      the experiment's runs page in chart mode, filtered to parent runs (harness.kind = sweep):
#        http://127.0.0.1:PORT/#/experiments/ID/runs?compareRunsMode=CHART&searchFilter=tags.`harness.kind`%20%3D%20'sweep'
#      closes the assistant side panel and shoots; then "Group by: harness.tuner" (mean and band per
#      tuner) and shoots again. Without node/npm it falls back to one `chromium --screenshot` of the URL.
#
# Usage: docs/screenshot.sh            (from the repository root; about 3 minutes on 2 CPU cores)
# Env:   PORT (5055), PYTHON (.venv/bin/python), KEEP=1 keeps the temporary store
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MLFLOW=$(dirname "$PY")/mlflow
PORT=${PORT:-5055}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
WORK=$(mktemp -d)
UI_PID=""
cleanup() {
    if [ -n "$UI_PID" ]; then kill "$UI_PID" 2>/dev/null || true; fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "store kept in $WORK"; fi
}
trap cleanup EXIT
export MLFLOW_DISABLE_TELEMETRY=true PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
STORE="sqlite:///$WORK/mlflow.db"

cd "$WORK"
"$PY" -m harness.cli benchmark branin --tuners optuna,random --seeds 3 --trials 20 --workers 2 \
    --devices cpu --id demo --tracking-uri "$STORE" --out "$WORK/compare"

"$MLFLOW" ui --backend-store-uri "$STORE" --host 127.0.0.1 --port "$PORT" >"$WORK/ui.log" 2>&1 &
UI_PID=$!
for _ in $(seq 120); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 1
done
EXP=$("$PY" -c "from mlflow.tracking import MlflowClient; print(MlflowClient('$STORE').get_experiment_by_name('branin').experiment_id)")
FILTER=$("$PY" -c "import urllib.parse; print(urllib.parse.quote(\"tags.\`harness.kind\` = 'sweep'\"))")
URL="http://127.0.0.1:$PORT/#/experiments/$EXP/runs?compareRunsMode=CHART&searchFilter=$FILTER"
echo "chart view: $URL"
FLAGS=(--no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync)

if command -v npm >/dev/null && npm install --prefix "$WORK/pw" --no-audit --no-fund --silent playwright-core@1; then
    cat >"$WORK/pw/shot.js" <<'EOF'
const { chromium } = require('playwright-core');
(async () => {
  const [exe, url, plain, grouped, ...args] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: exe, headless: true, args });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await page.goto(url);
  await page.getByText('best_so_far', { exact: true }).first().waitFor({ timeout: 60000 });
  const close = page.locator('button[aria-label="Close"]');  // the assistant side panel, if shown
  if (await close.count()) await close.first().click();
  await page.waitForTimeout(3000);
  await page.screenshot({ path: plain });
  await page.getByRole('button', { name: 'Group by' }).click();
  await page.locator('[role="menuitem"], [role="option"], [role="menuitemcheckbox"]')
    .filter({ hasText: /^harness\.tuner$/ }).first().click();
  await page.keyboard.press('Escape');
  await page.waitForTimeout(3000);
  await page.screenshot({ path: grouped });
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
EOF
    NODE_PATH="$WORK/pw/node_modules" node "$WORK/pw/shot.js" "$CHROMIUM" "$URL" \
        "$ROOT/docs/mlflow-ui.png" "$ROOT/docs/mlflow-ui-grouped.png" "${FLAGS[@]}"
else
    "$CHROMIUM" --headless "${FLAGS[@]}" --user-data-dir="$(mktemp -d)" --virtual-time-budget=20000 \
        --screenshot="$ROOT/docs/mlflow-ui.png" --window-size=1600,1000 "$URL"
fi
echo "wrote $ROOT/docs/mlflow-ui.png"
