"""Faces per second of `emodiff edit` on a folder of 48x48 faces -> all 7 emotions, one face at a
time (the reference) against batches across inputs (the fast path), in the same run.

    python benchmarks/edit_throughput.py [--data fer2013.csv] [--faces 1000] [--batch-size 64] [--device cpu]

The faces are PublicTest crops from --data, else the bundled sample faces repeated. Both paths
run the command itself (file reading, editing with the default settings, PNG writing); the
reference edits only --reference-faces of them, since it is the slow one.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emodiff.cli import main as emodiff


def write_faces(folder: Path, count: int, data: str | None) -> list[Path]:
    if data:
        from emodiff.data import load_fer2013

        faces = load_fer2013(data).split("PublicTest").images
    else:
        from emodiff.assets import sample_faces

        faces = np.stack([np.asarray(Image.open(p).convert("L")) for p in sample_faces()])
    paths = []
    for i in range(count):
        path = folder / f"face_{i:05d}.png"
        Image.fromarray(faces[i % len(faces)]).save(path)
        paths.append(path)
    return paths


def faces_per_second(paths: list[Path], batch_size: int, device: str, model: str | None) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        inputs = Path(scratch) / "in"
        inputs.mkdir()
        for path in paths:
            shutil.copy(path, inputs / path.name)
        arguments = ["edit", str(inputs), "--to", "all", "--out", str(Path(scratch) / "out"), "--batch-size", str(batch_size), "--device", device]
        if model:
            arguments += ["--model", model]
        started = time.perf_counter()
        assert emodiff(arguments) == 0
        return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="FER-2013 CSV for real PublicTest faces (default: bundled faces)")
    parser.add_argument("--faces", type=int, default=1000, help="faces in the folder (default: 1000)")
    parser.add_argument("--reference-faces", type=int, default=50, help="faces edited one at a time (default: 50)")
    parser.add_argument("--batch-size", type=int, default=64, help="faces per batch on the fast path (default: 64)")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"machine: {where}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_faces(Path(scratch), args.faces, args.data)
        reference = faces_per_second(paths[: args.reference_faces], 1, args.device, args.model)
        fast = faces_per_second(paths, args.batch_size, args.device, args.model)
    print(f"one face at a time ({args.reference_faces} faces): {reference:.2f} faces/s")
    print(f"batches of {args.batch_size} ({args.faces} faces):  {fast:.2f} faces/s")
    print(f"ratio: {fast / reference:.1f}x")


if __name__ == "__main__":
    main()
