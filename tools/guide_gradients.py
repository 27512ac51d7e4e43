"""What classifier guidance pushes: the gradient of log p(target | x_t) under each guide, for a few
PublicTest faces at one timestep, as one PNG (a row per target emotion: the noisy faces, then each
guide's gradient on them, scaled to its own largest value; grey is 0). Prints each guide's mean
gradient norm, which sets the --classifier-guidance scale that gives it the same push.

    python tools/guide_gradients.py --data fer2013.csv --out gradients.png GUIDE [GUIDE ...]

GUIDE: a model directory from `emodiff train-encoder guide`, or `guide` for the shipped one.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emodiff.data import load_fer2013, to_tensor, to_uint8
from emodiff.encoders import load_encoder
from emodiff.files import save_image
from emodiff.labels import EMOTIONS

FACES = (0, 5, 11, 23)  # PublicTest rows: four people, four expressions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("guides", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timestep", type=int, default=199, help="diffusion timestep of the noisy faces (default: 199, where the default edit decodes from)")
    parser.add_argument("--noise", type=float, default=0.57, help="the noise's share of the forward process's at that timestep "
                        "(default: 0.57, what a DDIM inversion to t = 199 leaves: residual 0.33 against 0.58 on 16 PublicTest faces)")
    args = parser.parse_args()

    faces = to_tensor(load_fer2013(args.data).split("PublicTest").images[list(FACES)])
    guides = [load_encoder(name) for name in args.guides]
    timesteps = torch.full((len(faces),), args.timestep)
    alpha = guides[0].alphas_cumprod[args.timestep]
    noise = torch.randn(faces.shape, generator=torch.Generator().manual_seed(0))
    noisy = alpha.sqrt() * faces + args.noise * (1 - alpha).sqrt() * noise
    rows = []
    for target, emotion in enumerate(EMOTIONS):
        tiles = list(to_uint8(noisy.clamp(-1, 1)))
        for name, guide in zip(args.guides, guides):
            x = noisy.clone().requires_grad_(True)
            chosen = guide.logits(x, timesteps).log_softmax(-1)[:, target].sum()
            gradient = torch.autograd.grad(chosen, x)[0]
            print(f"{name}: {emotion}, mean gradient norm {gradient.flatten(1).norm(dim=1).mean():.3f}")
            scaled = gradient / gradient.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
            tiles += list(to_uint8(scaled))
        rows.append(np.concatenate([np.asarray(tile).squeeze() for tile in tiles], axis=1))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    save_image(sheet.resize((sheet.width * 3, sheet.height * 3), Image.NEAREST), Path(args.out))


if __name__ == "__main__":
    main()
