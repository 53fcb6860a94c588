"""``tgdp-study make-ecg-sim``: write a simulated ECG data set (``tgdp.data.ecg_sim``), PTB-XL or CPSC2018 layout.

    tgdp-study make-ecg-sim OUT --domain source|target --records N --seed S [--hr] [--shift JSON] [--overwrite]

``study/cli.py`` hands ``tgdp-study make-ecg-sim ...`` to ``main(argv)`` (this parser owns the options);
``python -m study.programs.ecg_sim`` runs it alone. Prints the data set's summary as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, replace
from typing import Sequence

from tgdp.data.ecg_sim import SOURCE_SHIFT, TARGET_SHIFT, DomainShift, write_simulated_dataset

DESCRIPTION = "A label-conditioned synthetic 12-lead ECG generator written in the PTB-XL and CPSC2018 layouts."


MAX_RECORDS = 100_000  # 10 s records at 100 Hz: ~0.5 GiB of float32 signals; beyond, a mistyped count


def _records(text: str) -> int:
    """argparse type of --records: an integer 1..MAX_RECORDS (else a usage error naming the option)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RECORDS:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; allowed: an integer 1-{MAX_RECORDS}")
    return value


def parse_shift(text: str, default: DomainShift) -> DomainShift:
    """``default`` with the fields of the JSON object ``text`` replaced; a SystemExit naming --shift for
    bad JSON, an unknown field, a value of the wrong type or length, or a rule of ``DomainShift``."""
    try:
        overrides = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"--shift: not JSON ({e}); allowed: an object such as '{{\"noise_std\": 0.02}}'") from None
    fields = asdict(default)
    if not isinstance(overrides, dict):
        raise SystemExit(f"--shift: expected a JSON object of DomainShift fields; got {text!r}")
    unknown = set(overrides) - set(fields)
    if unknown:
        raise SystemExit(f"--shift: unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    clean = {}
    for k, v in overrides.items():
        want = fields[k]
        values = v if isinstance(want, tuple) and isinstance(v, list) else [v]
        ok = (isinstance(v, list) == isinstance(want, tuple) and (not isinstance(want, tuple) or len(v) == len(want))
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values))
        if not ok:
            shape = f"a list of {len(want)} finite numbers" if isinstance(want, tuple) else "a finite number"
            raise SystemExit(f"--shift: {k}: got {v!r}; allowed: {shape}")
        clean[k] = tuple(float(x) for x in v) if isinstance(want, tuple) else float(v)
    try:
        return replace(default, **clean)
    except ValueError as e:
        raise SystemExit(f"--shift: {e}") from None


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--domain", choices=("source", "target"), required=True, help="source: PTB-XL, target: CPSC2018")
    p.add_argument("--records", type=_records, default=1000, help=f"number of records, 1-{MAX_RECORDS}")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    p.add_argument("--hr", action="store_true", help="source: also write 500 Hz records500/")
    p.add_argument("--scp-statements", default=None, help="source: copy this real scp_statements.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    p.add_argument("--shift", default=None, help="JSON object overriding DomainShift fields of the domain default")


def run(args: argparse.Namespace) -> int:
    """Write the data set from parsed args; prints the summary, returns the exit status. A bad ``--shift``
    field is a ``SystemExit`` with the message (the CLI turns it into exit 2)."""
    shift = SOURCE_SHIFT if args.domain == "source" else TARGET_SHIFT
    if args.shift:
        shift = parse_shift(args.shift, shift)
    summary = write_simulated_dataset(args.out, args.domain, args.records, args.seed, shift, hr=args.hr,
                                      scp_statements=args.scp_statements, overwrite=args.overwrite)
    print(json.dumps({k: summary[k] for k in ("domain", "records", "seed", "label_counts")}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``tgdp-study make-ecg-sim``: ``main(["OUT", "--domain", "source", "--records", "100"])``."""
    from study.cli_help import EXAMPLES

    parser = argparse.ArgumentParser(prog="make-ecg-sim", description=DESCRIPTION, epilog=EXAMPLES["make-ecg-sim"],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
