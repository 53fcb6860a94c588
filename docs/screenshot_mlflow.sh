#!/usr/bin/env bash
# Regenerate docs/img/mlflow_ui.png: the MLflow UI of a finished study, rendered by headless Chromium.
# Needs Debian's chromium (apt-get install -y chromium). Usage: docs/screenshot_mlflow.sh STUDY_DIR [PORT] [URL_SUFFIX]
# e.g. URL_SUFFIX=/<summary run id> shows the summary run: the best value per n of every method as metrics.
set -euo pipefail
study=${1:?study directory, e.g. studies/gmm-smoke}; port=${2:-5055}
cd "$(dirname "$0")/.."
.venv/bin/tgdp-study ui "$study" --port "$port" & ui=$!
trap 'kill $ui 2>/dev/null' EXIT
sleep 12
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --window-size=1500,900 \
  --virtual-time-budget=25000 --screenshot=docs/img/mlflow_ui.png "http://127.0.0.1:$port/#/experiments/1/runs${3:-}"
