"""Time loading FER-2013: parsing the CSV (no cache) against reading the decoded cache, same run.

    python benchmarks/data_load.py --data ../shared/data/fer2013_train_public.csv.gz
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from emodiff.data import load_fer2013


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="FER-2013 CSV or image folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EMODIFF_CACHE_DIR"] = cache  # a cold, private cache
        parse, faces = timed(lambda: load_fer2013(args.data))
        cached, again = timed(lambda: load_fer2013(args.data))
    assert (faces.images == again.images).all()
    print(f"{len(faces)} faces from {args.data}")
    print(f"first load (parse + write cache): {parse:7.2f} s")
    print(f"second load (decoded cache):      {cached:7.2f} s")
    print(f"speed-up: {parse / cached:.0f}x")


if __name__ == "__main__":
    main()
