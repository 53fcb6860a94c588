"""study/progress.py: the plain lines (stdout not a terminal, with the shared-stage heartbeat) and the live view
in a pseudo-terminal. The events are fed as the runner and the Tune callback feed them; no Ray."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios
import time

from study.outcomes import FAILED, FINISHED, STOPPED
from study.progress import Progress, clock


def feed(p: Progress, shared_s: float = 0.0) -> None:
    """One unit of two trials: shared stages, one trial finished, one stopped at epoch 1, then a failed one
    in the second unit."""
    p.unit(1, "n10", 10, 0)
    with p.shared("source model, classifier, baselines"):
        time.sleep(shared_s)
    p.run_start("n10", "tgdp", resumed=False)
    p.trial_started(1, "aaaa0001", {"guidance.eta_cycle:switch": "off", "guidance.eta_cycle": 0.0,
                                    "sample.guidance_scale": 1.23456789})
    p.trial_epoch(1, "aaaa0001", 1, 0.1234567)
    p.trial_epoch(1, "aaaa0001", 2, 0.11)
    p.trial_epoch(1, "aaaa0001", 3, 0.11)  # the final evaluation's report (max_epochs + 1): no epoch line
    p.trial_ended(1, "aaaa0001", FINISHED, 3, 0.11)
    p.trial_started(2, "bbbb0002", {"sample.guidance_scale": 0.5})
    p.trial_epoch(2, "bbbb0002", 1, 0.3)
    p.trial_ended(2, "bbbb0002", STOPPED, 1, 0.3)
    p.run_end()
    p.unit(2, "n100", 100, 0)
    p.run_start("n100-vanilla", "vanilla", resumed=True)
    p.trial_started(1, "cccc0003", {})
    p.trial_ended(1, "cccc0003", FAILED, None, None, note="(see ray/)")
    p.close()


def progress(stream, **kw) -> Progress:
    return Progress(units=2, trials_per_run=2, runs_per_unit=1, metric="energy_distance", minimize=True,
                    max_epochs=2, stream=stream, **kw)


def test_plain_lines_name_the_unit_and_trial_and_tell_each_state():
    out = io.StringIO()  # not a terminal
    feed(progress(out, heartbeat_s=0.05), shared_s=0.3)
    lines = out.getvalue().splitlines()
    # guards the heartbeat: lines while the shared stages run (there were none before issue 15)
    assert sum("shared stages running" in x for x in lines) >= 2, lines
    # guards one line per event, each naming its unit k/N and trial k/N, with state, epoch and the best so far
    assert "[unit 1/2 n10] tgdp trial 1/2 aaaa0001 running: guidance.eta_cycle=off, sample.guidance_scale=1.235" \
        in lines
    assert "[unit 1/2 n10] tgdp trial 1/2 aaaa0001 epoch 1/2: energy_distance=0.1235" in lines
    assert not any("epoch 3/2" in x for x in lines)
    ended = [x for x in lines if "aaaa0001 finished" in x or "bbbb0002 stopped" in x or "cccc0003 failed" in x]
    assert ended[0].startswith("[unit 1/2 n10] tgdp trial 1/2 aaaa0001 finished: energy_distance=0.11 | best "
                               "energy_distance=0.11 (aaaa0001) | 1/4 trials, ")
    assert ended[1].startswith("[unit 1/2 n10] tgdp trial 2/2 bbbb0002 stopped early at epoch 1: "
                               "energy_distance=0.3 | best energy_distance=0.11 (aaaa0001) | 2/4 trials")
    assert ended[2].startswith("[unit 2/2 n100] vanilla trial 1/2 cccc0003 failed (see ray/) | 3/4 trials")
    # guards the ETA: present once a trial ended and trials are left, absent at the end of the budget
    assert re.search(r"elapsed, ETA \d+s$", ended[0]) and re.search(r"elapsed, ETA \d+s$", ended[2])
    # guards plain text: no carriage returns or escape codes off a terminal
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_the_live_view_renders_in_a_pseudo_terminal():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a 160-column terminal
    stream = os.fdopen(slave, "w")
    chunks: list[bytes] = []

    def drain() -> None:
        while select.select([master], [], [], 0.05)[0]:
            try:
                chunks.append(os.read(master, 65536))
            except OSError:
                return

    p = progress(stream)
    assert p.live  # a terminal: the live view is chosen by itself
    p.unit(1, "n10", 10, 0)
    with p.shared("source model"):
        time.sleep(1.3)  # the bar's clock ticks every second
        drain()
    p.run_start("n10", "tgdp", resumed=False)
    p.trial_started(1, "aaaa0001", {"w": 16})
    p.trial_epoch(1, "aaaa0001", 1, 0.2)
    drain()
    p.trial_ended(1, "aaaa0001", FINISHED, 3, 0.11)
    drain()
    p.close()
    stream.close()
    drain()
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    # guards the live view: a redrawn bar (carriage returns) with the run's trials done of N and the running
    # trial's stage; event lines still printed above it
    assert "\r" in text, text
    assert "[unit 1/2 n10] shared stages" in text and "0/2 trials" in text and "1/2 trials" in text, text
    assert "aaaa0001 epoch 1/2" in text, text
    assert "tgdp trial 1/2 aaaa0001 finished: energy_distance=0.11" in text, text
    # guards that epoch events do not scroll in the live view (the bar shows them)
    assert "aaaa0001 epoch 1/2: energy_distance" not in text


def test_clock():
    assert [clock(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_a_proxy_value_is_named_and_never_the_best():
    out = io.StringIO()
    p = progress(out)
    p.unit(1, "n10", 10, 0)
    p.run_start("n10", "tgdp", resumed=False)
    p.trial_epoch(1, "aaaa0001", 1, 0.5, metric="feat_energy")
    p.trial_ended(1, "aaaa0001", STOPPED, 1, 0.5, metric="feat_energy")
    lines = out.getvalue().splitlines()
    # guards ECG's in-training proxy (the objective is NaN on those reports): shown under its own name, and a
    # stopped trial's proxy is not the objective's best so far
    assert "[unit 1/2 n10] tgdp trial 1/2 aaaa0001 epoch 1/2: feat_energy=0.5" in lines
    assert "stopped early at epoch 1: feat_energy=0.5 | 1/4 trials" in lines[-1], lines[-1]
