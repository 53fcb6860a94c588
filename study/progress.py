"""Live progress of a running study, in the driver: units k/N, trials k/N per unit and tuned method, each trial's
state and epoch, elapsed time and ETA, and a heartbeat while a unit's shared stages run.

Fed by the runner's unit loop (``study.runner``: ``unit``, ``shared``, ``run_start``) and the Tune callback
(``study.callback``: ``trial_started``, ``trial_epoch``, ``trial_ended``). Two renderings of the same events:

- stdout not a terminal (logs, CI, ``| tee``): one plain line per event, each naming its unit k/N, so any line
  read alone says where the study is, e.g. ``[unit 1/2 n10] tgdp trial 2/3 1a2b3c4d stopped early at epoch 1``;
- a terminal: the finished/stopped/failed lines scroll above a tqdm bar of the current Tune run (trials done of
  N, Tune's rate and ETA) whose text shows the running trials' stage and epoch; the bar ticks every second.

The ETA of the study extrapolates the time per told trial in this session (shared stages included) to the
trials left; it is absent until one trial ended. The heartbeat is a daemon thread; all output holds one lock.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from study.outcomes import FAILED, FINISHED, STOPPED, short_params

HEARTBEAT_S = 15.0  # a line this often while shared stages run (stdout not a terminal)
TICK_S = 1.0  # the live view's refresh period

LIVE: dict[str, "Progress"] = {}  # study root -> the running driver's progress (the Tune callback is pickled)


def clock(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The progress of one study run. ``stream``: where to write (stdout); ``live``: the terminal view (default:
    whether ``stream`` is a terminal); ``metric`` / ``minimize``: the objective the best-so-far follows."""

    def __init__(self, *, units: int, trials_per_run: int, runs_per_unit: int, metric: str, minimize: bool,
                 max_epochs: int, stream: TextIO | None = None, live: bool | None = None,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.units, self.per_run, self.metric, self.minimize = units, trials_per_run, metric, minimize
        self.max_epochs, self.heartbeat_s = max_epochs, heartbeat_s
        self.total = units * runs_per_unit * trials_per_run
        self.done_before = 0  # trials told before this session (runs finished earlier)
        self.done = 0  # trials told in this session
        self.t0 = time.monotonic()
        self.prefix = ""
        self.run = ""
        self.running: dict[str, str] = {}  # trial id -> its stage for the live view
        self.best: dict[str, tuple[float, str]] = {}  # run -> (best value, trial id)
        self.bar: Any = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- output ------------------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """One event line (above the live bar in a terminal)."""
        with self._lock:
            if self.bar is not None:
                self.bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def _eta(self) -> str:
        elapsed = time.monotonic() - self.t0
        told = self.done_before + self.done
        text = f"{told}/{self.total} trials, {clock(elapsed)} elapsed"
        left = self.total - told
        if self.done and left > 0:
            text += f", ETA {clock(elapsed / self.done * left)}"
        return text

    def _bar(self, total: int | None, desc: str) -> None:
        """(Re)open the live bar (terminal only) and its ticker."""
        from tqdm import tqdm

        self._close_bar()
        fmt = ("{desc} {n_fmt}/{total_fmt} trials |{bar:12}| {elapsed}<{remaining}{postfix}" if total
               else "{desc} {elapsed}{postfix}")
        self.bar = tqdm(total=total, desc=desc, file=self.stream, bar_format=fmt, dynamic_ncols=True, leave=False)
        self._start_ticker(self.bar.refresh, TICK_S)

    def _close_bar(self) -> None:
        self._stop_ticker()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _start_ticker(self, fn, period: float) -> None:
        self._stop_ticker()
        self._stop = threading.Event()

        def tick():
            while not self._stop.wait(period):
                with self._lock:
                    fn()

        self._ticker = threading.Thread(target=tick, name="study-progress", daemon=True)
        self._ticker.start()

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join(timeout=2)
            self._ticker = None

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("; ".join(f"{t} {s}" for t, s in self.running.items()), refresh=True)

    # --- the runner's events -----------------------------------------------------------------------------
    def unit(self, k: int, label: str, n: int, seed: int) -> None:
        self.prefix = f"[unit {k}/{self.units} {label}]"
        self.line(f"{self.prefix} n={n}, seed {seed}")

    def skipped(self, what: str, trials: int) -> None:
        """A (unit, method) run that finished before this session: its trials count as told."""
        self.done_before += trials
        self.line(f"{self.prefix} {what} already finished; skipped")

    @contextmanager
    def shared(self, what: str) -> Iterator[None]:
        """The block running the unit's shared stages: a heartbeat line every ``heartbeat_s`` (or the live
        bar's clock), then the time they took."""
        t0 = time.monotonic()
        self.line(f"{self.prefix} shared stages ({what}) ...")
        if self.live:
            self._bar(None, f"{self.prefix} shared stages")
        else:
            self._start_ticker(lambda: self.line(f"{self.prefix} shared stages running, "
                                                 f"{clock(time.monotonic() - t0)}"), self.heartbeat_s)
        try:
            yield
        finally:
            self._close_bar() if self.live else self._stop_ticker()
        self.line(f"{self.prefix} shared stages done in {clock(time.monotonic() - t0)}")

    def run_start(self, run: str, method: str, resumed: bool) -> None:
        """The Tune run of tuned ``method`` in the current unit starts (or resumes)."""
        self.run, self.running = method, {}
        self.line(f"{self.prefix} {method}: {'resuming ' if resumed else ''}{self.per_run} trials")
        if self.live:
            self._bar(self.per_run, f"{self.prefix} {method}")

    def run_end(self) -> None:
        self._close_bar()

    def close(self) -> None:
        self._close_bar()

    # --- the Tune callback's events ----------------------------------------------------------------------
    def _name(self, k: int, trial_id: str) -> str:
        return f"{self.prefix} {self.run} trial {k}/{self.per_run} {trial_id}"

    def trial_started(self, k: int, trial_id: str, params: dict[str, Any]) -> None:
        self.running[trial_id] = "starting"
        self._postfix()
        self.line(f"{self._name(k, trial_id)} running: {short_params(params) or '(fixed config)'}")

    def trial_epoch(self, k: int, trial_id: str, epoch: int, value: Any, metric: str | None = None) -> None:
        """A guidance epoch reported (the final evaluation reports epoch max_epochs + 1: not an epoch);
        ``metric``: the name of ``value`` when it is not the objective (an in-training proxy)."""
        if epoch > self.max_epochs:
            return
        self.running[trial_id] = (f"epoch {epoch}/{self.max_epochs}" if epoch < self.max_epochs
                                  else "final evaluation")
        self._postfix()
        if not self.live:
            self.line(f"{self._name(k, trial_id)} epoch {epoch}/{self.max_epochs}: {metric or self.metric}="
                      f"{_num(value)}")

    def trial_ended(self, k: int, trial_id: str, outcome: str, epoch: int | None, value: Any,
                    note: str = "", metric: str | None = None) -> None:
        """``outcome``: ``study.outcomes`` FINISHED, STOPPED or FAILED; ``note``: appended (where to look);
        ``metric``: the name of ``value`` when it is an in-training proxy (it then never counts as the best)."""
        self.running.pop(trial_id, None)
        self.done += 1
        if outcome != FAILED and metric is None and isinstance(value, (int, float)) and value == value:
            sign = 1 if self.minimize else -1
            best = self.best.get(self.run)
            if best is None or sign * value < sign * best[0]:
                self.best[self.run] = (float(value), trial_id)
        what = f"stopped early at epoch {epoch}" if outcome == STOPPED else outcome
        best = self.best.get(self.run)
        tail = f" | best {self.metric}={_num(best[0])} ({best[1]})" if best else ""
        shown = f" {note}" if outcome == FAILED else f": {metric or self.metric}={_num(value)}"
        with self._lock:
            if self.bar is not None:
                self.bar.update(1)
            self._postfix()
            self.line(f"{self._name(k, trial_id)} {what}{shown}{tail} | {self._eta()}")


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = ["FAILED", "FINISHED", "LIVE", "Progress", "STOPPED", "clock"]
