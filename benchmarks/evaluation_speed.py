"""Time the two costly measurements of `emodiff evaluate` against their plain versions, same run:

- the judge: fp32, contiguous, batches of 512 (plain) against `judge_labels` on the channels-last
  judge (pieces of 64, bf16 autocast where the hardware has it), with the same 18 views;
- dlib's face descriptors: one process against one process per core.

    python benchmarks/evaluation_speed.py --data ../shared/data/fer2013_train_public.csv.gz
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from emodiff.data import load_fer2013, to_tensor
from emodiff.encoders import load_encoder
from emodiff.evaluation import judge_labels
from emodiff.identity import IdentityModel, available_cores


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


@torch.no_grad()
def plain_judge_labels(judge, faces: np.ndarray) -> np.ndarray:
    return np.concatenate([judge.predict_proba(to_tensor(faces[i : i + 512])).argmax(-1).numpy() for i in range(0, len(faces), 512)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="FER-2013 CSV or image folder")
    parser.add_argument("--judge-faces", type=int, default=1024, help="faces the judge classifies (default: 1024)")
    parser.add_argument("--identity-faces", type=int, default=400, help="faces dlib describes (default: 400)")
    args = parser.parse_args()
    faces = load_fer2013(args.data).split("PublicTest").images

    judge_faces = faces[: args.judge_faces]
    plain_judge = load_encoder("judge")
    fast_judge = load_encoder("judge").to(memory_format=torch.channels_last)
    plain_s, plain = timed(lambda: plain_judge_labels(plain_judge, judge_faces))
    fast_s, fast = timed(lambda: judge_labels(fast_judge, judge_faces))
    print(f"judge, {len(judge_faces)} faces x {len(plain_judge.tta_views(to_tensor(judge_faces[:1])))} views:")
    print(f"  fp32, batches of 512:                {plain_s:7.2f} s  ({len(judge_faces) / plain_s:6.1f} faces/s)")
    print(f"  judge_labels (channels-last, bf16):  {fast_s:7.2f} s  ({len(judge_faces) / fast_s:6.1f} faces/s)")
    print(f"  speed-up: {plain_s / fast_s:.1f}x; verdicts that differ: {int((plain != fast).sum())} of {len(judge_faces)}")

    identity_faces = faces[: args.identity_faces]
    one_s, one = timed(lambda: IdentityModel(workers=1).descriptors(identity_faces))
    cores = available_cores()
    many_s, many = timed(lambda: IdentityModel(workers=cores).descriptors(identity_faces))
    print(f"dlib descriptors, {len(identity_faces)} faces:")
    print(f"  one process:       {one_s:7.2f} s")
    print(f"  {cores} processes:       {many_s:7.2f} s (including starting them)")
    print(f"  speed-up: {one_s / many_s:.1f}x; largest descriptor difference {np.abs(one - many).max():.1e}")


if __name__ == "__main__":
    main()
