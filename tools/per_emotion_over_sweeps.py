"""Each target emotion's edit settings chosen over the rows of several sweeps of one model on the same
faces: ``emodiff sweep``'s per-emotion rule (``evaluation.choose_per_emotion``), at the first sweep's
chosen setting, over the rows of all of them — for grids that were run apart (e.g. guidance from the
null label in one sweep, away from the source emotion in another) rather than as one product.

    python tools/per_emotion_over_sweeps.py SWEEP.json [SWEEP.json ...] --out edit_defaults.json
"""

import argparse
import json
from pathlib import Path

from emodiff.evaluation import choose_per_emotion
from emodiff.files import atomic_write


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="sweep.json files written by emodiff sweep on the same faces")
    parser.add_argument("--out", required=True, help="the edit_defaults.json to write")
    args = parser.parse_args(argv)
    records = [json.loads(Path(path).read_text()) for path in args.sweeps]
    rows = [row for record in records for row in record["rows"]]
    per_emotion = choose_per_emotion(rows, records[0]["chosen"])
    text = json.dumps(per_emotion, indent=2)
    atomic_write(Path(args.out), lambda temp: temp.write_text(text))
    print(f"over {len(rows)} rows at {args.sweeps[0]}'s chosen setting: {text}")


if __name__ == "__main__":
    main()
