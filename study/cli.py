"""``tgdp-study``: the command line.

    tgdp-study run SPEC [--name NAME] [--dir DIR] [--address ADDR] [--tracking-uri URI] [--dry-run]
    tgdp-study resume DIR [--address ADDR] [--tracking-uri URI]
    tgdp-study status DIR | report DIR | best DIR --n N [--method M] [--out FILE] | ls [DIR]
    tgdp-study evaluate DIR --seeds 100-109 [--out DIR]
    tgdp-study evaluate SPEC.yaml --frozen FROZEN.json --seeds 100-109 --out DIR
    tgdp-study ui DIR [--host 127.0.0.1] [--port 5000]
    tgdp-study dashboard DIR [--port 8080]
    tgdp-study gmm [--n 10 100 1000] [--seed 0 ...] [--set KEY=VALUE] [--jobs J] [--out DIR]
    tgdp-study make-ecg-sim OUT --domain source|target --records N --seed S
    tgdp-study ecg (--sim | --source DIR --target DIR) [--n 10 100] [--preset micro|cpu|paper] [--out DIR] ...

User errors (bad spec, bad path, bad option) print one message on stderr and exit 2; nothing is
written for an invalid spec. Each command imports what executes it (``study.runner``, ``study.report``,
``study.ui``, the comparison programs in ``study.programs``) only when it runs, so ``--dry-run``, ``ls``
and ``--help`` never import Ray or torch.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from study import UserError
from study.cli_help import add_examples, version
from study.integrity import open_study
from study.paths import DEFAULT_STUDIES_DIR, list_studies, study_paths, validate_study_name
from study.plan import dry_run_plan
from study.spec import check_resources, load_spec, read_study_spec

PROG = "tgdp-study"


def os_error_message(e: OSError) -> str:
    """One line naming the path and the system's reason (e.g. 'Read-only file system')."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {e.strerror or e}" if where else f"{e.strerror or e}"


def _finish(result: Any) -> int:
    """Exit code of a dispatched function: an int is the code, a string is printed."""
    if isinstance(result, str):
        print(result)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# ---------------------------------------------------------------------------------------------
# run / --dry-run


def cmd_run(a: argparse.Namespace) -> int:
    spec = load_spec(a.spec, tuple(a.set or ()))
    if a.name is not None:
        source = spec.source  # the file and its --set items, for messages
        spec = spec.model_copy(update={"name": validate_study_name(a.name)})
        spec._source = source
    paths = study_paths(a.dir, spec.name)
    if not a.address:
        check_resources(spec)  # the cluster's totals are checked again by the runner
    if a.dry_run:
        print(dry_run_plan(spec, paths.root, a.address))
        return 0
    if paths.exists():
        raise UserError(f"study already exists: {paths.root} (resume it with `{PROG} resume {paths.root}`, "
                        "or choose another --name)")
    from study.runner import run_study

    return _finish(run_study(spec, paths.root, a.address, a.tracking_uri, verbose=a.verbose))


def cmd_resume(a: argparse.Namespace) -> int:
    from study.extend import add_trials, resume_finished, study_finished

    paths = open_study(a.dir)
    spec = read_study_spec(paths)  # refuses a spec edited since creation, before anything starts
    if a.add_trials:
        spec = add_trials(paths, a.add_trials)
    elif study_finished(paths, spec):  # nothing to run: no Ray, no lock
        return resume_finished(paths, spec)
    from study.runner import resume_study

    return _finish(resume_study(paths.root, a.address, a.tracking_uri, verbose=a.verbose))


def cmd_status(a: argparse.Namespace) -> int:
    root = open_study(a.dir).root
    from study.report import status

    return _finish(status(root))


def cmd_report(a: argparse.Namespace) -> int:
    root = open_study(a.dir).root
    from study.report import write_report

    return _finish(write_report(root))


def cmd_best(a: argparse.Namespace) -> int:
    paths = open_study(a.dir)
    out = Path(a.out).resolve() if a.out else None
    from study.report import export_best

    return _finish(export_best(paths.root, a.n, out, a.method, force=a.force))


def cmd_evaluate(a: argparse.Namespace) -> int:
    target = a.dir if a.frozen else open_study(a.dir).root  # with --frozen: a spec file, no study
    from study.evaluate import evaluate_study, parse_seeds

    return _finish(evaluate_study(target, parse_seeds(a.seeds), a.out, a.jobs, a.frozen))


def cmd_ui(a: argparse.Namespace) -> int:
    root = open_study(a.dir).root
    from study.ui import serve

    return _finish(serve(root, a.host, a.port))


def cmd_dashboard(a: argparse.Namespace) -> int:
    root = open_study(a.dir).root
    from study.dashboard import serve

    return _finish(serve(root, a.port))


def cmd_gmm(a: argparse.Namespace) -> int:
    from study.programs import gmm

    try:
        return _finish(gmm.main(argparse.Namespace(n=a.n, seed=a.seed, out=a.out, set=a.set, jobs=a.jobs)))
    except ValueError as e:  # a bad --set key or value
        raise UserError(f"gmm: {e}") from None


def cmd_make_ecg_sim(argv: Sequence[str]) -> int:
    """Hand the raw arguments to ``study.programs.ecg_sim.main`` (its parser owns the options: OUT, --domain,
    --records, --seed, --hr, --overwrite, ...), so the two never drift apart."""
    from study.programs import ecg_sim

    try:
        return _finish(ecg_sim.main(list(argv)))
    except SystemExit as e:  # its argparse (int code) or a message (str code)
        if isinstance(e.code, str):
            raise UserError(e.code) from None
        return int(e.code or 0)
    except (ValueError, FileExistsError) as e:  # bad counts, an existing data set
        raise UserError(f"make-ecg-sim: {e}") from None


def cmd_ecg(argv: Sequence[str]) -> int:
    """Hand the raw arguments to ``study.programs.ecg.main`` (its parser owns the options), imported only
    when the command runs, so --help, --dry-run and ls stay free of torch."""
    from study.programs import ecg

    try:
        return _finish(ecg.main(list(argv)))
    except SystemExit as e:  # its argparse (int code) or a message (str code)
        if isinstance(e.code, str):
            raise UserError(f"ecg: {e.code}") from None
        return int(e.code or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:  # bad sizes, missing data directories
        raise UserError(f"ecg: {e}") from None


# ---------------------------------------------------------------------------------------------
# ls


def _trial_counts(db: Path) -> str:
    """'n=10: 4 COMPLETE, 1 RUNNING; ...' read straight from the Optuna sqlite file (read-only)."""
    if not db.is_file():
        return "not started"
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT s.study_name, t.state, COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "GROUP BY s.study_name, t.state ORDER BY s.study_name").fetchall()
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"optuna.db unreadable ({e})"
    per: dict[str, list[str]] = {}
    for study, state, count in rows:
        per.setdefault(study, []).append(f"{count} {str(state).lower()}")
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in per.items()) or "no trials yet"


def cmd_ls(a: argparse.Namespace) -> int:
    studies = list_studies(a.dir)
    if not studies:
        print(f"no studies in {Path(a.dir).resolve()}")
        return 0
    for p in studies:
        try:
            s = read_study_spec(p)
            what = f"{s.experiment}  n={list(s.factors.n)}  {s.budget.trials_per_n} trials/n  sampler {s.sampler}"
        except UserError as e:
            what = f"INVALID SPEC ({str(e).splitlines()[0]})"
        print(f"{p.name}  {what}\n  {p.root}\n  trials: {_trial_counts(p.optuna_db)}")
    return 0


# ---------------------------------------------------------------------------------------------
# parser and entry point


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; allowed: an integer >= 1")
    return value


def _port(text: str) -> int:
    """argparse type of --port: an integer in 1..65535 (else a usage error, exit 2)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; allowed: an integer 1-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Ray/Optuna/MLflow hyper-parameter studies of TGDP.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cluster_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", default=None, help="join an existing Ray cluster (default: local ray.init)")
        p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: <study>/mlflow.db)")
        p.add_argument("--verbose", action="store_true",
                       help="also print Ray Tune's tables and the INFO lines of Ray, Optuna and MLflow")

    p = sub.add_parser("run", help="start a study from a spec YAML")
    p.add_argument("spec", help="study spec (YAML), e.g. search_spaces/gmm.yaml")
    p.add_argument("--name", default=None, help="study name (default: the spec's name)")
    p.add_argument("--dir", default=DEFAULT_STUDIES_DIR,
                   help="the PARENT directory: the study is created in DIR/NAME (default: %(default)s); every "
                   "other command takes that study directory DIR/NAME itself")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec key before validation, e.g. budget.trials_per_n=4 or "
                   "fixed.guidance.width=256 (repeatable; YAML values; recorded in the study's spec.yaml)")
    cluster_args(p)
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; create nothing")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted study, or extend a finished one")
    p.add_argument("dir", help="study directory (holds spec.yaml)")
    p.add_argument("--add-trials", type=_positive_int, default=None, metavar="K",
                   help="extend a finished study: raise budget.trials_per_n by K (recorded in spec.yaml and "
                   "spec.sha256) and run the K more trials per unit and method")
    cluster_args(p)
    p.set_defaults(func=cmd_resume)

    for name, func, help_ in (("status", cmd_status, "trials per n and their state"),
                              ("report", cmd_report, "write the study report (tables, figures)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("dir", help="study directory")
        p.set_defaults(func=func)

    p = sub.add_parser("best", help="export the best trial's resolved config for one n")
    p.add_argument("dir", help="study directory")
    p.add_argument("--n", type=int, required=True, help="target sample size")
    p.add_argument("--method", default="tgdp", help="a tuned method of the study (default: %(default)s)")
    p.add_argument("--out", default=None, help="output file outside the study directory (default: print)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("evaluate", help="the protocol's final table: every method, frozen best configs, on "
                       "evaluation seeds (docs/protocol.md)")
    p.add_argument("dir", help="study directory (tuned on its factors.seeds, the development seeds); with --frozen, "
                   "the study's spec file")
    p.add_argument("--frozen", default=None, metavar="FILE", help="frozen configurations (a frozen.json an evaluation "
                   "wrote) to evaluate without the study; needs --out")
    p.add_argument("--seeds", nargs="+", required=True, metavar="SEEDS",
                   help="evaluation seeds, e.g. 100-109 or 100,101 (refused if they overlap the development seeds)")
    p.add_argument("--out", default=None, help="output directory (default: <study>/evaluation); rerun to resume")
    p.add_argument("--jobs", type=_positive_int, default=1, help="seeds evaluated in parallel processes, the CPUs "
                   "split between them (default: %(default)s)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ls", help="list the studies in a directory")
    p.add_argument("dir", nargs="?", default=DEFAULT_STUDIES_DIR, help="default: %(default)s")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("ui", help="serve the MLflow UI of a study")
    p.add_argument("dir", help="study directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=5000, help="TCP port, 1-65535 (default: %(default)s)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("dashboard", help="serve optuna-dashboard of a study on 127.0.0.1 (extra: .[dashboard])")
    p.add_argument("dir", help="study directory")
    p.add_argument("--port", type=_port, default=8080, help="TCP port, 1-65535 (default: %(default)s)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("gmm", help="run the GMM experiment (all methods, fixed configs) without a study")
    p.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="target sample sizes")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="one or more seeds; several seeds add summary.md (mean, sd, wins per seed)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a stage config key, e.g. guidance.width=256 (repeatable)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="seeds run in parallel processes")
    p.add_argument("--out", default="results/gmm", help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_gmm)

    # Listed for --help only: main() hands "make-ecg-sim ..." to study.programs.ecg_sim and "ecg ..." to
    # study.programs.ecg (their own parsers) before parsing.
    sub.add_parser("make-ecg-sim", add_help=False,
                   help="write a simulated ECG data set: OUT --domain source|target --records N --seed S")
    sub.add_parser("ecg", add_help=False,
                   help="run the ECG experiment (all methods, a preset config) without a study; ecg --help")
    add_examples(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tgdp-study``; returns the exit code (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["make-ecg-sim"]:
            return cmd_make_ecg_sim(argv[1:])
        if argv[:1] == ["ecg"]:
            return cmd_ecg(argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
            return int(e.code or 0)
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        return code
    except BrokenPipeError:  # `best ... | head -1`: the reader is gone, as it wished; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush finds no pipe
        return 0
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # read-only, full or pseudo file systems for --dir / --out: the path, not a traceback
        print(f"{PROG}: error: {os_error_message(e)}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``tgdp-study`` console script: ``main``, then exit without the interpreter's teardown.

    After a study that teardown (module and C++ destructors of Ray, torch and gRPC) took seconds, for nothing a
    user can see (bench/README.md). The exit functions (log flushes, Ray's) and the flush of stdout/stderr still
    run; with another non-daemon thread alive the ordinary exit is used, which waits for it."""
    code = main()
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - the registered exit functions, which os._exit would skip
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left (`| head`), or the stream was closed
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
