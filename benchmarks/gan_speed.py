"""Seconds per face, one face -> all 7 emotions: the GAN's one forward pass against emodiff's
default diffusion edit, in the same run on the same face.

    python benchmarks/gan_speed.py --gan models/gan [--model DIR] [--repeats 20] [--device cpu]

Without --gan the GAN's default architecture is timed untrained: speed does not depend on weights.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from edit_speed import best_of, load
from PIL import Image

from emodiff.assets import sample_faces
from emodiff.gan import ExpressionGenerator, GanEditor
from emodiff.labels import EMOTIONS
from emodiff.settings import EditSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gan", default=None, help="GAN model directory from train-gan (default: the untrained architecture)")
    parser.add_argument("--model", default=None, help="diffusion model directory (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each path; the best is reported")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()

    diffusion, source = load(args.model, args.device)
    gan = GanEditor.from_pretrained(args.gan, device=args.device) if args.gan else GanEditor(ExpressionGenerator()).to(args.device)
    face = np.asarray(Image.open(sample_faces()[0]).convert("L"))[None]
    targets = list(range(len(EMOTIONS)))
    print(f"diffusion: {source}; GAN: {args.gan or 'untrained default architecture'} "
          f"({sum(p.numel() for p in gan.generator.parameters()) / 1e6:.2f}M generator parameters)")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    def run_diffusion():
        diffusion.edit_faces(face, targets, EditSettings(), source_labels=[0])

    def run_gan():
        gan.edit_faces(face, targets)

    for run in (run_diffusion, run_gan):
        run()  # warm-up: first calls allocate and pick kernels
    diffusion_best, diffusion_median = best_of(args.repeats, run_diffusion)
    gan_best, gan_median = best_of(args.repeats, run_gan)
    print(f"diffusion (emodiff defaults, bf16 {diffusion.bf16}): {diffusion_best:.4f} s  (median {diffusion_median:.4f})")
    print(f"GAN (one forward pass, bf16 {gan.bf16}):            {gan_best:.4f} s  (median {gan_median:.4f})")
    print(f"ratio: the GAN is {diffusion_best / gan_best:.1f}x faster (1 face -> {len(targets)} emotions)")


if __name__ == "__main__":
    main()
