"""A StarGAN-style expression editor: the GAN peer of the diffusion editor in Table 1.

One generator takes a face and the target emotion (as one-hot planes, StarGAN's conditioning) and
edits in one forward pass. It predicts a change in the logit space of the face, ``tanh(atanh(x) +
delta)``, so a zero change is the input itself and outputs stay in range without clipping. The
discriminator has StarGAN's two heads: real/fake per patch and the emotion of the face; spectral
norm keeps it Lipschitz without a gradient penalty, so no double backward is needed on any device.
Training is ``training.train_gan``; a model directory holds ``generator/`` (the EMA weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .data import IMAGE_SIZE, to_tensor, to_uint8
from .devices import autocast, batch_piece, bf16_supported, resolve_device
from .files import save_model_dir
from .labels import EMOTIONS
from .pipeline import FaceEditor, ModelLoadError
from .settings import EditSettings

if TYPE_CHECKING:
    from . import photos

GENERATOR = "generator"


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x):
        return x + self.body(x)


def _conv_norm_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    padding = (kernel - stride + 1) // 2
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU(inplace=True)]


class ExpressionGenerator(ModelMixin, ConfigMixin):
    """StarGAN's generator at 48x48: down-sample, residual blocks, up-sample (nearest + conv, which
    leaves no checkerboard), the image's change as output."""

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), residual_blocks: int = 4, num_labels: int = len(EMOTIONS)):
        super().__init__()
        layers = _conv_norm_relu(1 + num_labels, channels[0], 7)
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += _conv_norm_relu(c_in, c_out, 4, stride=2)
        layers += [_Residual(channels[-1]) for _ in range(residual_blocks)]
        for c_in, c_out in zip(channels[:0:-1], channels[-2::-1]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_norm_relu(c_in, c_out, 3)]
        layers.append(nn.Conv2d(channels[0], 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 1, 48, 48) in [-1, 1] shown with emotion ``labels`` (B,)."""
        planes = F.one_hot(labels, self.config.num_labels).to(images.dtype)[:, :, None, None]
        change = self.net(torch.cat([images, planes.expand(-1, -1, *images.shape[2:])], dim=1)).float()
        return torch.tanh(torch.atanh(images.float().clamp(-0.999, 0.999)) + change)  # 0 and 255 survive the round trip


class ExpressionDiscriminator(ModelMixin, ConfigMixin):
    """PatchGAN trunk (stride-2 convs down to 3x3) with a real/fake map and an emotion head."""

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), num_labels: int = len(EMOTIONS), image_size: int = IMAGE_SIZE):
        super().__init__()
        layers, c_in = [], 1
        for c_out in channels:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.real_fake = spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1))
        self.emotion = spectral_norm(nn.Conv2d(c_in, num_labels, image_size // 2 ** len(channels)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(real/fake scores per patch (B, P), emotion logits (B, num_labels))."""
        features = self.trunk(images)
        return self.real_fake(features).flatten(1).float(), self.emotion(features).flatten(1).float()


class GanEditor(FaceEditor):
    """Edits with a trained generator: one forward pass per face and target.

    The diffusion settings (mode, strength, steps, guidance, keep detail) have no meaning for it and
    are ignored; the source emotion is not needed either: the generator reads it from the face.
    """

    def __init__(self, generator: ExpressionGenerator):
        self.generator = generator.eval()
        self.to(next(generator.parameters()).device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "auto") -> GanEditor:
        target = resolve_device(device)
        try:
            generator = ExpressionGenerator.from_pretrained(Path(directory) / GENERATOR, torch_dtype=torch.float32, use_safetensors=True)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{directory}: cannot load this GAN model directory ({error})") from None
        return cls(generator).to(target)

    def save_pretrained(self, directory: str | Path, fp16: bool = False) -> None:
        save_model_dir(self.generator, Path(directory) / GENERATOR, fp16=fp16)

    def to(self, device: str | torch.device = "auto", bf16: bool | None = None) -> GanEditor:
        self.device = resolve_device(device)
        self.bf16 = bf16_supported(self.device) if bf16 is None else bf16
        self.generator.to(self.device)
        return self

    @torch.inference_mode()
    def edit_faces(self, faces: np.ndarray, targets: list[int], settings: EditSettings | None = None, source_labels=None, seed: int = 0,
                   shown: photos.Shown | None = None) -> np.ndarray:  # fmt: skip
        """uint8 (B, 48, 48) faces -> uint8 (B, len(targets), 48, 48); deterministic, no noise (nor
        a reading of its edits as it makes them, so what a photo shows changes nothing)."""
        x = to_tensor(faces).to(self.device)
        count, per_face = len(faces), len(targets)
        images = x.repeat_interleave(per_face, dim=0)
        labels = torch.tensor(list(targets) * count, device=self.device)
        size = batch_piece(self.device, len(images))
        with autocast(self.device, self.bf16):
            edited = torch.cat([self.generator(images[i : i + size], labels[i : i + size]) for i in range(0, len(images), size)])
        return to_uint8(edited).reshape(count, per_face, *faces.shape[1:])
