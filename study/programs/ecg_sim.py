"""``tgdp-study make-ecg-sim``: write a simulated ECG data set (``tgdp.data.ecg_sim``), PTB-XL or CPSC2018 layout.

    tgdp-study make-ecg-sim OUT --domain source|target --records N --seed S [--hr] [--shift JSON] [--overwrite]

``study/cli.py`` hands ``tgdp-study make-ecg-sim ...`` to ``main(argv)`` (this parser owns the options);
``python -m study.programs.ecg_sim`` runs it alone. Prints the data set's summary as one JSON line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from typing import Sequence

from tgdp.data.ecg_sim import SOURCE_SHIFT, TARGET_SHIFT, write_simulated_dataset

DESCRIPTION = "A label-conditioned synthetic 12-lead ECG generator written in the PTB-XL and CPSC2018 layouts."


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--domain", choices=("source", "target"), required=True, help="source: PTB-XL, target: CPSC2018")
    p.add_argument("--records", type=int, default=1000, help="number of records")
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
        overrides = json.loads(args.shift)
        unknown = set(overrides) - set(asdict(shift))
        if unknown:
            raise SystemExit(f"--shift: unknown field(s) {sorted(unknown)}; allowed: {sorted(asdict(shift))}")
        shift = replace(shift, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
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
