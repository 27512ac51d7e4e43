"""Which denoiser size and recipe learn best in a fixed CPU budget: equal wall time per candidate.

Each candidate trains with `emodiff train` (label variant, the real loop) for --minutes, then its
EMA weights are scored by the held-out denoising loss on PublicTest: MSE on the noise at 10 fixed
timesteps (50..950) with fixed noise, the same for every candidate. Lower is better. Images/s is
the training throughput of that candidate on this machine.

    python benchmarks/denoiser_size.py --data ../shared/data/fer2013_train_public.csv.gz --minutes 5
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from emodiff.data import load_fer2013, to_tensor
from emodiff.denoiser import EmotionDenoiser
from emodiff.pipeline import training_scheduler
from emodiff.training import DiffusionTrainConfig, train_diffusion

CANDIDATES = {
    "small 32-48-96 x2": dict(block_out_channels=(32, 48, 96)),
    "default 32-64-128 x2": dict(block_out_channels=(32, 64, 128)),
    "default + attention 12x12": dict(block_out_channels=(32, 64, 128), attention_levels=(False, False, True)),
    "wide 48-96-192 x2": dict(block_out_channels=(48, 96, 192)),
}


@torch.no_grad()
def held_out_loss(model_dir: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    denoiser = EmotionDenoiser.from_pretrained(model_dir / "denoiser").eval()
    scheduler = training_scheduler()
    g = torch.Generator().manual_seed(0)
    losses = []
    for t in range(50, 1000, 100):
        noise = torch.randn(images.shape, generator=g)
        timesteps = torch.full((len(images),), t)
        noisy = scheduler.add_noise(images, noise, timesteps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predicted = denoiser(noisy, timesteps, labels)
        losses.append((predicted.float() - noise).pow(2).mean().item())
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="FER-2013 CSV or image folder")
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes per candidate")
    parser.add_argument("--held-out", type=int, default=1024, help="PublicTest faces scored")
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args()

    test = load_fer2013(args.data).split("PublicTest").take(np.arange(args.held_out))
    images, labels = to_tensor(test.images), torch.from_numpy(test.labels)
    print("| candidate | parameters | images/s | held-out loss |\n|---|---|---|---|")
    for name, overrides in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            config = DiffusionTrainConfig(
                cond="label", data=args.data, out=tmp, device="cpu", minutes=args.minutes, checkpoint_minutes=1e9, **overrides
            )
            train_diffusion(config)
            with open(Path(tmp) / "metrics.csv") as f:
                last = list(csv.DictReader(f))[-1]
            denoiser_config = json.loads((Path(tmp) / "denoiser" / "config.json").read_text())
            params = sum(p.numel() for p in EmotionDenoiser.from_config(denoiser_config).parameters())
            loss = held_out_loss(Path(tmp), images, labels)
        speed = float(last["images_seen"]) / (float(last["minutes"]) * 60)
        print(f"| {name} | {params / 1e6:.2f}M | {speed:.0f} | {loss:.4f} |", flush=True)


if __name__ == "__main__":
    main()
