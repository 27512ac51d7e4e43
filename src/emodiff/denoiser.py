"""The conditional denoiser: a diffusers UNet2DModel whose timestep embedding gets a condition added.

The three variants of the paper are one module configured by ``code_dim``:
- ``code_dim == 0`` (label): condition = label embedding (cond_dim);
- ``code_dim > 0`` (cnn / vae): condition = concat(label embedding (cond_dim/2),
  Linear(semantic code) (cond_dim/2)).
Index ``NULL_LABEL`` is the learned "no emotion" label and ``null_code`` the learned "no code"
embedding, both trained by condition dropout so classifier-free guidance works at sampling time.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from torch import nn

from .data import IMAGE_SIZE
from .labels import EMOTIONS

NULL_LABEL = len(EMOTIONS)
CONDITIONS = ("label", "cnn", "vae")


class EmotionDenoiser(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        cond: str = "label",
        code_dim: int = 0,
        cond_dim: int = 256,
        sample_size: int = IMAGE_SIZE,
        channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (False, False, False),
        norm_num_groups: int = 16,
        attention_head_dim: int = 32,
    ):
        super().__init__()
        if cond not in CONDITIONS:
            raise ValueError(f"unknown condition {cond!r}: expected one of {', '.join(CONDITIONS)}")
        if (cond == "label") != (code_dim == 0):
            raise ValueError(f"cond={cond!r} needs code_dim {'0' if cond == 'label' else '> 0'}, got {code_dim}")
        if len(attention_levels) != len(block_out_channels):
            raise ValueError("attention_levels needs one flag per entry of block_out_channels")
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=block_out_channels,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            time_embedding_dim=cond_dim,
            class_embed_type="identity",
        )
        label_dim = cond_dim // 2 if code_dim else cond_dim
        self.label_embedding = nn.Embedding(len(EMOTIONS) + 1, label_dim)
        if code_dim:
            self.code_projection = nn.Linear(code_dim, cond_dim - label_dim)
            self.null_code = nn.Parameter(torch.zeros(cond_dim - label_dim))

    @property
    def uses_code(self) -> bool:
        return self.config.code_dim > 0

    def condition(
        self, labels: torch.Tensor, codes: torch.Tensor | None = None, drop_code: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The vector added to the timestep embedding; ``drop_code`` (bool, B) swaps in the null code."""
        label_part = self.label_embedding(labels)
        if not self.uses_code:
            return label_part
        if codes is None:
            code_part = self.null_code.expand(len(labels), -1)
        else:
            code_part = self.code_projection(codes.to(label_part.dtype))
            if drop_code is not None:
                code_part = torch.where(drop_code[:, None], self.null_code.to(code_part.dtype), code_part)
        return torch.cat([label_part, code_part], dim=-1)

    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        labels: torch.Tensor,
        codes: torch.Tensor | None = None,
        drop_code: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted noise for noisy ``sample`` at ``timesteps`` under (labels, codes)."""
        condition = self.condition(labels, codes, drop_code)
        return self.unet(sample, timesteps, class_labels=condition).sample
