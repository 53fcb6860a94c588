"""What ``tgdp-study --help`` shows beyond the options: an example per command (the epilogs) and ``--version``.

Kept apart from ``study.cli`` (the parser and dispatch): examples are text that grows with the commands.
Every command of the parser has an entry (tests/study/test_workflow.py checks); ``ecg`` and ``make-ecg-sim``
own their parsers and show theirs in ``tgdp-study ecg --help``.
"""

from __future__ import annotations

import argparse

PACKAGE = "tgdp-study"  # the distribution name in pyproject.toml

EXAMPLES: dict[str, str] = {
    "run": """examples:
  tgdp-study run search_spaces/gmm_smoke.yaml --dry-run           # the plan, an estimated run time; writes nothing
  tgdp-study run search_spaces/gmm.yaml --set budget.trials_per_n=8 --set factors.n=[10]
  tgdp-study run search_spaces/gmm.yaml --name gmm-wide --dir studies   # creates studies/gmm-wide/""",
    "resume": """examples:
  tgdp-study resume studies/gmm-default                  # continue after Ctrl-C or a crash
  tgdp-study resume studies/gmm-default --add-trials 4   # a finished study: 4 more trials per unit and method""",
    "status": """example:
  tgdp-study status studies/gmm-default""",
    "report": """example:
  tgdp-study report studies/gmm-default     # writes studies/gmm-default/report/""",
    "best": """examples:
  tgdp-study best studies/gmm-default --n 100 --out best-n100.yaml && tgdp-study run best-n100.yaml
  tgdp-study best studies/gmm-compare --n 10 --method tgdp_reg""",
    "evaluate": """example:
  tgdp-study evaluate studies/gmm-default --seeds 100-109   # writes studies/gmm-default/evaluation/""",
    "ls": """example:
  tgdp-study ls studies""",
    "ui": """example:
  tgdp-study ui studies/gmm-default --port 5001   # then open http://127.0.0.1:5001""",
    "dashboard": """example:
  tgdp-study dashboard studies/gmm-default --port 8080   # optuna-dashboard; pip install -e .[dashboard]""",
    "gmm": """examples:
  tgdp-study gmm --n 10 100 --seed 0 1 2 --jobs 2 --out results/gmm
  tgdp-study gmm --n 100 --set guidance.width=256 --set sample.steps=50""",
    "make-ecg-sim": """example:
  tgdp-study make-ecg-sim data/sim/target --domain target --records 600 --seed 0""",
    "ecg": """examples:
  tgdp-study ecg --sim --n 10 100 --preset micro --out results/ecg-micro      # simulated data, seconds
  tgdp-study ecg --source data/ptbxl --target data/cpsc2018 --n 10 --preset cpu --threads 1 --out results/ecg""",
}


def version() -> str:
    """The installed package's version (its metadata), or 'unknown' when run from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(PACKAGE)
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_examples(subparsers: argparse._SubParsersAction) -> None:
    """Give every command's parser its example as the epilog, printed as written."""
    for name, parser in subparsers.choices.items():
        parser.epilog = EXAMPLES[name]
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


__all__ = ["EXAMPLES", "add_examples", "version"]
