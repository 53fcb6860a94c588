"""Regenerate the README's MLflow screenshots of a finished study, rendered by headless Chromium.

    .venv/bin/python docs/screenshot_mlflow.py studies/gmm-smoke [--port 5055] [--out docs/img]

writes ``mlflow_ui.png`` (the runs table: every parent run expanded to its trial and baseline runs, with the
``val_<m>``/``test_<m>`` columns of the objective metric m) and ``mlflow_metrics.png`` (the chart view: the same
run list beside charts of the summary run's best value per n, a test metric per run and the trials' validation
curves). Needs Debian's chromium (apt-get install -y chromium) and nothing else: it starts ``tgdp-study ui`` on
the port, drives Chromium over the DevTools protocol (``--remote-debugging-pipe``, JSON messages on file
descriptors 3 and 4) and stops both.

Why not ``chromium --screenshot``: the runs page keeps its view (expanded runs, columns, charts) in the browser's
localStorage, not in its URL, and MLflow's plotly charts render after the page's data requests, which
``--virtual-time-budget`` did not wait for. So the view is written to localStorage first, and the capture waits
until the rows and the charts exist.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

WIDTH, HEIGHT = 1500, 940  # tall enough for the 19 rows of the smoke study
# The summary chart's lines: best tgdp per n against fine-tuning (a chart's legend shows two lines).
SUMMARY_LINES = ("best_tgdp", "finetune")
# After loading: the navigation side bar folded to icons, and no plotly hover toolbars.
TIDY = ("document.querySelector('[data-component-id=\"mlflow_header.toggle_sidebar_button\"]')?.click();"
        "document.head.insertAdjacentHTML('beforeend', '<style>.modebar-container {display: none}</style>')")


class Chromium:
    """Headless Chromium with one page, commanded over the DevTools protocol through a pipe."""

    def __init__(self) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if exe is None:
            sys.exit("no chromium on PATH (apt-get install -y chromium)")
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}",
                 f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-pipe", "about:blank"]
        # Chromium reads commands on fd 3 and answers on fd 4: bash puts the pipe ends there.
        self._proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome}', exe, *flags],
                                      pass_fds=(to_chrome, from_chrome), stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf, self._id, self.session = b"", 0, None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params: object) -> dict:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self._buf:
                if not select.select([self._r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(f"chromium did not answer {method}")
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise EOFError("chromium exited")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def js(self, expression: str) -> object:
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return answer["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 60) -> None:
        """Load ``url`` and wait until the JavaScript expression ``ready`` is true."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self.js(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: not ready after {timeout:.0f} s ({ready})")
            time.sleep(0.5)

    def drag(self, x0: float, x1: float, y: float) -> None:
        for kind, x in (("mousePressed", x0), ("mouseMoved", (x0 + x1) / 2), ("mouseMoved", x1), ("mouseReleased", x1)):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1,
                      buttons=0 if kind == "mouseReleased" else 1)

    def capture(self, path: Path) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=WIDTH - 2, y=HEIGHT - 2)  # no hover effects
        time.sleep(1.5)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        print(f"wrote {path}")

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self._proc.wait(10)
        except Exception:
            self._proc.kill()


def api(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def views(runs: list[dict], metric: str) -> tuple[dict, dict]:
    """The runs page's stored view for the table and for the charts (MLflow 3's ExperimentPage UI state)."""
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    keys = {m["key"] for r in runs for m in r["data"].get("metrics", [])}
    summary = next((r for r, t in zip(runs, tags) if r["info"]["run_name"] == "summary"), runs[0])
    summary_keys = {m["key"] for m in summary["data"].get("metrics", [])}
    parents = {t["mlflow.parentRunId"] for t in tags if "mlflow.parentRunId" in t}
    common = {"runsExpanded": {p: True for p in parents}, "runsHiddenMode": "FIRST_20_RUNS"}
    columns = [f"val_{metric}", f"test_{metric}", f"best_tgdp_val_{metric}", f"best_tgdp_test_{metric}",
               "test_sliced_w2", "test_mean_q"]
    columns = [f"metrics.`{k}`" for k in columns if k in keys]
    # ag-grid applies the stored widths of the columns named in columnOrder only
    order = ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *columns]
    table = {**common, "selectedColumns": columns, "columnOrder": order,
             "columnWidths": {order[0]: 250, **{c: 160 if c.startswith("metrics.`best") else 125 for c in columns}}}

    def chart(uuid: str, kind: str, key: str, **extra: object) -> dict:
        return {"uuid": uuid, "type": kind, "metricKey": key, "displayName": key, "metricSectionId": "main",
                "runsCountToCompare": 20, "deleted": False, "isGenerated": False, **extra}

    line = {"lineSmoothness": 0, "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
            "yAxisExpressions": [], "range": {}, "ignoreOutliers": False, "useGlobalXaxisKey": False,
            "useGlobalLineSmoothing": True, "scaleType": "log"}
    best = [k for k in (f"{m}_test_{metric}" for m in SUMMARY_LINES) if k in summary_keys]
    charts = [chart("best", "LINE", best[0], selectedMetricKeys=best, xAxisScaleType="log", **line)] if best else []
    charts.append(chart("per-run", "BAR", "test_mean_q" if "test_mean_q" in keys else f"test_{metric}"))
    charts.append(chart("curves", "LINE", f"val_{metric}", selectedMetricKeys=[f"val_{metric}"],
                        xAxisScaleType="linear", **line))
    section = {"uuid": "main", "name": "Metrics", "display": True, "isReordered": False, "deleted": False,
               "isGenerated": False, "columns": len(charts), "cardHeight": 560}
    return table, {**common, "selectedColumns": [], "compareRunCharts": charts, "compareRunSections": [section]}


def shoot(base: str, experiment: str, runs: list[dict], metric: str, out: Path) -> None:
    table, charts = views(runs, metric)
    store = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState'
    rows = min(len(runs), 20)
    browser = Chromium()
    try:
        for name, mode, view in (("mlflow_ui.png", "TABLE", table), ("mlflow_metrics.png", "CHART", charts)):
            browser.open(f"{base}/health", "document.readyState == 'complete'")  # the UI's origin, not the app
            browser.js(f"localStorage.setItem({json.dumps(store)}, {json.dumps(json.dumps(view))});"
                       "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"  # the Assistant side panel
                       "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
            ready = f"document.querySelectorAll('.ag-row').length >= {rows}"
            if mode == "CHART":
                ready += f" && document.querySelectorAll('svg.main-svg').length >= {len(view['compareRunCharts'])}"
            browser.open(f"{base}/#/experiments/{experiment}/runs?compareRunsMode={mode}", ready)
            browser.js(TIDY)
            time.sleep(1)
            if mode == "CHART":  # widen the run list so that the run names show whole
                bar = browser.js("(b => b && [b.x + b.width / 2, b.y + 300])([...document.querySelectorAll('.bar')]"
                                 ".map(e => e.getBoundingClientRect()).find(r => r.height > 300))")
                if bar:
                    browser.drag(bar[0], bar[0] + 90, bar[1])
            browser.capture(out / name)
    finally:
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="a finished study directory, e.g. studies/gmm-smoke")
    ap.add_argument("--port", type=int, default=5055, help="port for the study's MLflow UI (default 5055)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img", help="folder of the pngs")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from study.paths import StudyPaths
    from study.spec import read_study_spec

    spec = read_study_spec(StudyPaths(Path(a.study).resolve()))
    base = f"http://127.0.0.1:{a.port}"
    log = tempfile.TemporaryFile()  # the server's output, shown if it fails to start
    ui = subprocess.Popen([str(Path(sys.executable).with_name("tgdp-study")), "ui", a.study, "--port", str(a.port)],
                          start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):  # MLflow migrates its database first: seconds
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                if ui.poll() is not None:
                    log.seek(0)
                    sys.exit(f"tgdp-study ui exited ({ui.returncode}):\n{log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.5)
        found = api(base, "experiments/search", {"filter": f"name = '{spec.name}'", "max_results": 1})
        experiment_id = found["experiments"][0]["experiment_id"]
        runs = api(base, "runs/search", {"experiment_ids": [experiment_id], "max_results": 1000})["runs"]
        shoot(base, experiment_id, runs, spec.objective[0].metric, a.out)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
