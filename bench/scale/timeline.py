"""What each busy thread of the restarted operator did, second by second: reads the
py-spy profile `bench/scale/run --profile-restart FILE` wrote and prints, per thread, the
spans in which its innermost Rung frames stayed the same. Each thread's times count from
its own first sample: the watches and workers start together, after the imports.

    python bench/scale/timeline.py FILE [--until 15] [--min 0.05]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

IDLE = ("WorkQueue.get", "Controller._work")   # a worker waiting for work, or for the watches to list


def spans(profile: dict, frames: list[dict]) -> list[tuple[float, float, str]]:
    """(start s, end s, the innermost three Rung frames) for each run of equal samples."""
    out, t = [], 0.0
    for stack, weight in zip(profile["samples"], profile["weights"]):
        ours = [f"{frames[i]['name']}:{frames[i].get('line')}" for i in stack if "rung/" in (frames[i].get("file") or "")]
        what = " > ".join(ours[-3:])
        if out and out[-1][2] == what:
            out[-1] = (out[-1][0], t + weight, what)
        else:
            out.append((t, t + weight, what))
        t += weight
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--until", type=float, default=15.0, help="seconds after the profile's start")
    ap.add_argument("--min", type=float, default=0.05, help="shortest span shown, in seconds")
    args = ap.parse_args()
    data = json.loads(Path(args.file).read_text())
    for profile in data["profiles"]:
        shown = [(a, b, what) for a, b, what in spans(profile, data["shared"]["frames"])
                 if a < args.until and b - a >= args.min and what and not what.split(" > ")[-1].startswith(IDLE)]
        if shown:
            print(f"== {profile['name']}")
            for a, b, what in shown:
                print(f"{a:6.2f} - {b:6.2f}  {what}")


if __name__ == "__main__":
    main()
