"""`rung meta-features PATH`: a dataset's meta-features, ready for spec.task.metaFeatures.

Prints the map (rung.warmstart.meta_features) as YAML lines to paste under
`spec.task.metaFeatures`, or as one JSON object. Bad input ends with one
`error: <field>: <problem>; <fix>` line on stderr and exit code 2, as every rung command.
"""

from __future__ import annotations

import argparse
import json
import sys

from rung.errors import InputError
from rung.warmstart import load_dataset, meta_features

EXIT_OK, EXIT_INPUT = 0, 2
DIGITS = 4   # enough to tell tasks apart; short enough to read in a manifest


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, like every other input error
        raise InputError(self.prog, message, f"see {self.prog} --help")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rung meta-features",
                description="Meta-features of a dataset (size, dimensions, class balance, landmarkers) to paste "
                            "under spec.task.metaFeatures, so that warm start can weigh earlier Studies by how "
                            "alike their tasks are.")
    p.add_argument("path", metavar="PATH", help="a .csv (header optional), .npy table, or .npz with X and y")
    p.add_argument("--target", metavar="COLUMN",
                   help="the target column of a table: a header name or a 0-based index (default: the last)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format (default: %(default)s)")
    return p


def render(features: dict[str, float], fmt: str) -> str:
    values = {k: round(v, DIGITS) for k, v in features.items()}
    if fmt == "json":
        return json.dumps(values)
    return "\n".join(f"{k}: {v}" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        X, y = load_dataset(args.path, args.target)
        print(render(meta_features(X, y), args.format))
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
