"""A model soup: a model directory whose denoiser weights are the weighted mean of two fine-tunes of
one model (WiSE-FT, Wortsman et al., 2022) — e.g. the shipped model and a fine-tune started from
it, which can keep what each does well without another training run.

    python tools/average_models.py A B --out SOUP [--weight-of-b 0.5]

SOUP is A's model as `emodiff export` writes it (scheduler, guide, edit defaults, training
records; no checkpoint) with the averaged denoiser, saved in float32; A and B must share the
denoiser's architecture.
"""

import argparse
import shutil
from pathlib import Path

import torch

from emodiff.denoiser import EmotionDenoiser
from emodiff.pipeline import EmotionEditPipeline
from emodiff.runs import copy_training_records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="model directory whose other parts the soup keeps")
    parser.add_argument("b", type=Path, help="model directory to average with it")
    parser.add_argument("--out", type=Path, required=True, help="the soup's model directory (must not exist)")
    parser.add_argument("--weight-of-b", type=float, default=0.5, help="B's share of every weight, 0..1 (default: 0.5)")
    args = parser.parse_args(argv)
    if not 0 <= args.weight_of_b <= 1:
        parser.error(f"--weight-of-b must be in 0..1, got {args.weight_of_b}")
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new directory")
    soup = EmotionEditPipeline.from_pretrained(args.a, device="cpu")
    weights_a = soup.denoiser.state_dict()
    weights_b = EmotionDenoiser.from_pretrained(args.b / "denoiser", torch_dtype=torch.float32).state_dict()
    if {k: v.shape for k, v in weights_a.items()} != {k: v.shape for k, v in weights_b.items()}:
        parser.error(f"{args.a} and {args.b} have different denoiser architectures: they cannot be averaged")
    soup.denoiser.load_state_dict({k: v * (1 - args.weight_of_b) + weights_b[k] * args.weight_of_b for k, v in weights_a.items()})
    temp = args.out.with_name(f".{args.out.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    try:  # built beside OUT and renamed: a failed or killed run leaves no half-written model directory
        soup.save_pretrained(temp)
        copy_training_records(args.a, temp)
        temp.rename(args.out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    print(f"{args.out}: {1 - args.weight_of_b:g} x {args.a} + {args.weight_of_b:g} x {args.b}")


if __name__ == "__main__":
    main()
