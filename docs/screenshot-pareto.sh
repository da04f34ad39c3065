#!/usr/bin/env bash
# Reproduce docs/mlflow-ui-pareto.png and docs/mlflow-ui-pareto-front.png: the MLflow UI's scatter
# chart of a multi-objective sweep's trials, branin (X) against currin (Y).
#
#   1. a small real multi-objective sweep (Branin-Currin, optuna TPE, 30 trials) into a fresh SQLite store
#   2. a real `mlflow ui` on 127.0.0.1
#   3. headless Debian chromium (apt-get install -y chromium), driven by playwright-core (npm), opens
#      the experiment's runs page in chart mode, filtered to the sweep's trials (harness.kind = trial):
#        http://127.0.0.1:PORT/#/experiments/ID/runs?compareRunsMode=CHART&searchFilter=tags.`harness.kind`%20%3D%20'trial'
#      expands the parent run "front" (the trials are its child runs), shows all runs in the charts (eye icon -> "Show all runs"), adds a chart through the UI
#      ("Add chart" -> "Scatter chart", X axis branin, Y axis currin) and shoots; then the same with
#      the filter tags.`harness.pareto` = 'true' (the front only) and shoots again.
#
# Usage: docs/screenshot-pareto.sh     (from the repository root; about 2 minutes on 2 CPU cores)
# Env:   PORT (5056), PYTHON (.venv/bin/python), CHROMIUM (/usr/bin/chromium), KEEP=1 keeps the
#        temporary store (and, when the browser step fails, its screenshot and page HTML)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MLFLOW=$(dirname "$PY")/mlflow
PORT=${PORT:-5056}
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
"$PY" -m harness.cli sweep branin-currin --tuner optuna --trials 30 --workers 2 --devices cpu \
    --tracking-uri "$STORE" --name front

"$MLFLOW" ui --backend-store-uri "$STORE" --host 127.0.0.1 --port "$PORT" >"$WORK/ui.log" 2>&1 &
UI_PID=$!
for _ in $(seq 120); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 1
done
EXP=$("$PY" -c "from mlflow.tracking import MlflowClient; print(MlflowClient('$STORE').get_experiment_by_name('branin-currin').experiment_id)")
url() {
    local q
    q=$("$PY" -c "import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))" "$1")
    echo "http://127.0.0.1:$PORT/#/experiments/$EXP/runs?compareRunsMode=CHART&searchFilter=$q"
}
URL_ALL=$(url "tags.\`harness.kind\` = 'trial'")
URL_FRONT=$(url "tags.\`harness.pareto\` = 'true'")
echo "all trials: $URL_ALL"
echo "the front:  $URL_FRONT"
FLAGS=(--no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync)

npm install --prefix "$WORK/pw" --no-audit --no-fund --silent playwright-core@1
cat >"$WORK/pw/shot.js" <<'EOF'
const { chromium } = require('playwright-core');
const [exe, work, urlAll, urlFront, outAll, outFront, ...args] = process.argv.slice(2);

async function pick(page, n, metric) {  // the dialog's comboboxes: chart type, X axis, Y axis
  await page.getByRole('dialog').getByRole('combobox').nth(n).click({ force: true });
  await page.keyboard.type(metric);  // the select's search box filters the options
  await page.keyboard.press('Enter');
}

async function shoot(browser, url, out) {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });  // fresh UI state
  const page = await context.newPage();
  try {
    await page.goto(url);
    await page.getByText('front', { exact: true }).first().waitFor({ timeout: 60000 });
    const close = page.locator('button[aria-label="Close"]');  // the assistant side panel, if shown
    if (await close.count()) await close.first().click();
    // the trials are child runs, listed under their sweep's parent run "front": expand it
    await page.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]').first().click();
    await page.getByText('currin', { exact: true }).first().waitFor({ timeout: 60000 });
    // every run in the charts, not the first 10
    await page.locator('[data-testid="experiment-view-runs-visibility-column-header"]').first().click();
    await page.getByRole('menuitemradio', { name: /Show all runs/ }).first().click();
    await page.keyboard.press('Escape');
    // Add chart -> Scatter chart, X axis branin, Y axis currin
    await page.getByRole('button', { name: 'Add chart' }).first().click();
    await page.locator('[data-testid="experiment-view-compare-runs-chart-type-scatter"]').click();
    await pick(page, 1, 'branin');
    await pick(page, 2, 'currin');
    await page.locator('[data-testid="experiment-view-compare-runs-chart-modal-confirm"]').click();
    await page.waitForTimeout(3000);
    // keep only the charts of currin in view: the new scatter chart and currin's own curve
    const search = page.getByPlaceholder(/Search metric charts/i);
    if (await search.count()) { await search.first().fill('currin'); await page.waitForTimeout(2000); }
    const card = page.getByText(/branin vs\.? currin|currin vs\.? branin/i).first();
    if (await card.count()) await card.scrollIntoViewIfNeeded();
    await page.waitForTimeout(1000);
    await page.screenshot({ path: out });
  } catch (e) {
    await page.screenshot({ path: `${work}/failed.png` }).catch(() => {});
    require('fs').writeFileSync(`${work}/failed.html`, await page.content().catch(() => ''));
    throw e;
  } finally {
    await context.close();
  }
}

(async () => {
  const browser = await chromium.launch({ executablePath: exe, headless: true, args });
  try {
    await shoot(browser, urlAll, outAll);
    await shoot(browser, urlFront, outFront);
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
EOF
NODE_PATH="$WORK/pw/node_modules" node "$WORK/pw/shot.js" "$CHROMIUM" "$WORK" "$URL_ALL" "$URL_FRONT" \
    "$ROOT/docs/mlflow-ui-pareto.png" "$ROOT/docs/mlflow-ui-pareto-front.png" "${FLAGS[@]}"
echo "wrote $ROOT/docs/mlflow-ui-pareto.png and $ROOT/docs/mlflow-ui-pareto-front.png"
