"""Semantic encoders (the paper's CNN classifier and VAE) and the independent judge.

All three take images as float (B, 1, 48, 48) in [-1, 1] and share one interface:
``encode(images) -> (B, code_dim)``. Each knows its own training loss and validation metrics so
one training loop (``emodiff.training.train_encoder``) serves them all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .data import IMAGE_SIZE, affine_warp
from .labels import EMOTIONS


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@dataclass(frozen=True)
class PredictionViews:
    """Which extra views a classifier averages over: the face moved ``shift`` pixels each way, turned
    ±``rotate_deg``, zoomed by 1 ± ``zoom`` (0: none); always with the mirror of each view."""

    shift: int = 0
    rotate_deg: float = 0.0
    zoom: float = 0.0

    @classmethod
    def of(cls, model) -> PredictionViews:
        """The views a model's config asks for (the judge's defaults; none for the CNN)."""
        config = model.config
        return cls(config.get("tta_shift", 0), config.get("tta_rotate_deg", 0.0), config.get("tta_zoom", 0.0))

    def apply(self, images: torch.Tensor) -> list[torch.Tensor]:
        moves = [(0.0, 1.0, dx, dy) for dx, dy in ((self.shift, 0), (-self.shift, 0), (0, self.shift), (0, -self.shift))] if self.shift else []
        moves += [(sign * self.rotate_deg, 1.0, 0, 0) for sign in (1, -1)] if self.rotate_deg else []
        moves += [(0.0, 1.0 + sign * self.zoom, 0, 0) for sign in (1, -1)] if self.zoom else []
        views = [images]
        for degrees, scale, dx, dy in moves:
            per_image = torch.ones(len(images), device=images.device)
            shift_grid = torch.tensor([dx, dy], dtype=torch.float32, device=images.device) * 2 / images.shape[-1]
            views.append(
                affine_warp(images, per_image * math.radians(degrees), per_image * scale, shift_grid.expand(len(images), 2), per_image)
            )
        return views + [view.flip(-1) for view in views]


class EmotionClassifier(ModelMixin, ConfigMixin):
    """Shared classifier behaviour: cross-entropy training and accuracy, view-averaged prediction."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, views: PredictionViews | None = None) -> torch.Tensor:
        """Class probabilities averaged over the image and its mirror (faces are near-symmetric) and
        over the test-time ``views`` (default: the ones the model's config asks for)."""
        views = (views or PredictionViews.of(self)).apply(images)
        probs = self.logits(torch.cat(views)).float().softmax(-1)
        return probs.view(len(views), len(images), -1).mean(0)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = self.logits(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        return loss, {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}

    @torch.no_grad()
    def validation_metrics(self, images: torch.Tensor, labels: torch.Tensor, views: PredictionViews | None = None) -> dict:
        probs = self.predict_proba(images, views)
        return {
            "loss": F.nll_loss(probs.clamp_min(1e-8).log(), labels).item(),
            "accuracy": (probs.argmax(-1) == labels).float().mean().item(),
        }


class EmotionCNN(EmotionClassifier):
    """The paper's CNN semantic encoder: a conv stack and an MLP; the code is the 2nd-to-last MLP layer."""

    @register_to_config
    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        hidden_dim: int = 512,
        code_dim: int = 256,
        num_classes: int = len(EMOTIONS),
        dropout: float = 0.5,
        label_smoothing: float = 0.1,
        image_size: int = IMAGE_SIZE,
    ):
        super().__init__()
        layers, channels = [], 1
        for width in widths:
            layers += [*_conv_bn_relu(channels, width), *_conv_bn_relu(width, width), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        side = image_size // 2 ** len(widths)
        self.mlp = nn.Sequential(
            nn.Linear(channels * side * side, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, code_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(code_dim, num_classes))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))


class _ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(c_in, c_out, stride), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class EmotionJudge(EmotionClassifier):
    """The evaluation classifier: a ResNet-18 layout (2-2-2-2 basic blocks) at full 48x48 resolution.

    Written here rather than taken from timm because timm needs torchvision, which has no build
    for this torch on the CPU machines. It only ever judges edits; nothing steers generation with
    it, so its predictions can afford 18 views: the face and its mirror, each also moved 2 pixels
    each way, turned ±6° and zoomed ±7% (about half the range of its training augmentation).
    """

    @register_to_config
    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = len(EMOTIONS),
        dropout: float = 0.3,
        label_smoothing: float = 0.1,
        tta_shift: int = 2,
        tta_rotate_deg: float = 6.0,
        tta_zoom: float = 0.07,
    ):
        super().__init__()
        layers, channels = _conv_bn_relu(1, widths[0]), widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                layers.append(_ResidualBlock(channels, width, 2 if stage > 0 and index == 0 else 1))
                channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features: the space the realism (Fréchet) distance is measured in."""
        return self.features(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))

    @property
    def feature_dim(self) -> int:
        return self.config.widths[-1]


class TransformerJudge(EmotionClassifier):
    """The second judge: a convolutional stem down to 6x6, then a transformer over those 36 patches.

    Another architecture family than the first judge (global attention rather than a residual
    conv stack) and another recipe (stronger geometric augmentation, no label smoothing, mirror-only
    test-time views), so the two judges' errors are not the same errors: a setting that wins by
    one judge and loses by the other has been fitted to a judge. It only reports, never chooses.
    """

    @register_to_config
    def __init__(
        self,
        stem_widths: tuple[int, ...] = (32, 64, 128),
        dim: int = 160,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 2,
        num_classes: int = len(EMOTIONS),
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
        image_size: int = IMAGE_SIZE,
    ):
        super().__init__()
        layers, channels = [], 1
        for index, width in enumerate((*stem_widths, dim)):
            layers += _conv_bn_relu(channels, width, stride=1 if index == 0 else 2)
            channels = width
        self.stem = nn.Sequential(*layers)
        side = image_size // 2 ** len(stem_widths)
        self.position = nn.Parameter(torch.randn(1, side * side, dim) * 0.02)
        block = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of the patch tokens: the space this judge's Fréchet distance is measured in."""
        tokens = self.stem(images).flatten(2).transpose(1, 2) + self.position
        return self.norm(self.blocks(tokens)).mean(1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))

    @property
    def feature_dim(self) -> int:
        return self.config.dim


JUDGE_CLASSES = (EmotionJudge, TransformerJudge)


class NoisyEmotionClassifier(EmotionClassifier):
    """The guiding classifier of classifier guidance (Dhariwal & Nichol, 2021): the emotion of a
    *noisy* face x_t at diffusion timestep t, trained on the diffusion's own noise schedule, so its
    gradient means something at every step of a decode. Its own small network and training run:
    neither judge ever guides, or the judges would grade their own pushes. Trained on t below
    ``max_timestep`` only, where edits decode (strength <= 0.5): above it the linear schedule leaves
    too little of the face to read an emotion from, and those steps would take half its capacity.

    ``adversarial_radius`` > 0 trains it adversarially (Kawar et al., 2022, "Enhancing diffusion-based
    image synthesis with robust classifier guidance"): each noisy face is first pushed the way that
    most raises the loss, as far as a change of that L2 radius to the clean face moves x_t
    (sqrt(ᾱ_t) times it: at large t the face is faint, and a fixed radius would drown it). A plain
    classifier's gradient is partly an adversarial pattern, which raises the target's probability
    without changing what a person reads; a robust one's gradient has to change the features. Here
    it did become smooth and face-shaped, but as a guide it bought less emotion per point of
    identity, by both judges, than the plain one (docs/levers.md, "A robust guide"): the shipped guide is plain.
    """

    @register_to_config
    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        time_dim: int = 128,
        num_classes: int = len(EMOTIONS),
        dropout: float = 0.3,
        label_smoothing: float = 0.1,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        max_timestep: int = 500,
        image_size: int = IMAGE_SIZE,
        adversarial_radius: float = 0.0,
    ):
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        super().__init__()
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_dim, time_dim)
        self.stages, self.time_biases, channels = nn.ModuleList(), nn.ModuleList(), 1
        for width in widths:  # conv, conv + the timestep's per-channel bias, pool
            self.stages.append(nn.ModuleList([nn.Sequential(*_conv_bn_relu(channels, width), nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)), nn.MaxPool2d(2)]))
            self.time_biases.append(nn.Linear(time_dim, width))
            channels = width
        side = image_size // 2 ** len(widths)  # a flat head, not pooling: where a feature is (mouth, brows) is the emotion
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * side * side, num_classes))
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)  # DDPM's linear schedule
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def logits(self, images: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of noisy faces at ``timesteps`` (one per face, or None: clean faces, t = 0)."""
        if timesteps is None:
            timesteps = torch.zeros(len(images), dtype=torch.long, device=images.device)
        time = F.silu(self.time_embedding(self.time_proj(timesteps).to(images.dtype)))
        x = images
        for (conv, pool), bias in zip(self.stages, self.time_biases):
            x = pool(F.relu(conv(x) + bias(time).to(x.dtype)[:, :, None, None]))
        return self.head(x)

    def add_noise(self, images: torch.Tensor, timesteps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
        alpha = self.alphas_cumprod.to(images.device)[timesteps].view(-1, 1, 1, 1)
        return alpha.sqrt() * images + (1 - alpha).sqrt() * noise

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        timesteps = torch.randint(0, self.config.max_timestep, (len(images),), device=images.device)
        noisy = self.add_noise(images, timesteps)
        if self.config.adversarial_radius > 0:
            noisy = noisy + self.adversarial_push(noisy, timesteps, labels)
        logits = self.logits(noisy, timesteps)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        return loss, {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}

    def adversarial_push(self, noisy: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One projected gradient step from a random start inside the L2 ball of the radius above
        (Wong et al.'s fast adversarial training: one step costs one more forward and backward pass,
        and the random start keeps a single step from learning to mask its own gradient)."""
        radius = self.config.adversarial_radius * self.alphas_cumprod.to(noisy.device)[timesteps].sqrt().view(-1, 1, 1, 1)
        flat = lambda v: v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)  # noqa: E731
        start = torch.randn_like(noisy)
        start = start / flat(start) * radius * torch.rand(len(noisy), 1, 1, 1, device=noisy.device)
        delta = start.requires_grad_(True)  # the faces carry no gradient: only the push is differentiated
        loss = F.cross_entropy(self.logits(noisy + delta, timesteps).float(), labels)
        (gradient,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + 1.25 * radius * gradient / flat(gradient)
        return (delta * (radius / flat(delta)).clamp(max=1.0)).detach()

    @torch.no_grad()
    def validation_metrics(self, images: torch.Tensor, labels: torch.Tensor, views: PredictionViews | None = None) -> dict:
        """Accuracy on clean faces (averaged over ``views``, as every classifier's) and at t = 200
        and 400, the range the default edit decodes (fixed noise, so epochs compare)."""
        metrics = super().validation_metrics(images, labels, views)
        for t in (200, 400):
            timesteps = torch.full((len(images),), t, dtype=torch.long, device=images.device)
            noisy = self.add_noise(images, timesteps, torch.Generator().manual_seed(t))
            metrics[f"accuracy_t{t}"] = (self.logits(noisy, timesteps).argmax(-1) == labels).float().mean().item()
        return metrics


class FaceVAE(ModelMixin, ConfigMixin):
    """The paper's VAE semantic encoder: conv encoder -> (mu, logvar) -> conv decoder; the code is mu."""

    @register_to_config
    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        code_dim: int = 128,
        kl_weight: float = 0.5,
        image_size: int = IMAGE_SIZE,
    ):
        super().__init__()
        down, channels = [], 1
        for width in widths:
            down += [*_conv_bn_relu(channels, width, stride=2), *_conv_bn_relu(width, width)]
            channels = width
        self.side = image_size // 2 ** len(widths)
        self.encoder = nn.Sequential(*down, nn.Flatten())
        flat = channels * self.side * self.side
        self.to_moments = nn.Linear(flat, 2 * code_dim)
        self.from_code = nn.Linear(code_dim, flat)
        up = []
        for width in reversed(widths[:-1]):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(channels, width), *_conv_bn_relu(width, width)]
            channels = width
        up += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(channels, widths[0]), nn.Conv2d(widths[0], 1, 3, 1, 1)]
        self.decoder = nn.Sequential(*up)

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_moments(self.encoder(images)).chunk(2, dim=-1)
        return mu, logvar.clamp(-30, 20)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.moments(images)[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        hidden = self.from_code(codes).view(len(codes), -1, self.side, self.side)
        return self.decoder(hidden)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (decode the mean)."""
        return self.decode(self.encode(images))

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        mu, logvar = self.moments(images)
        sample = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        squared_error = (self.decode(sample).float() - images).pow(2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).float().sum(1).mean()
        return squared_error + self.config.kl_weight * kl, {"kl": kl.item()}

    @torch.no_grad()
    def validation_metrics(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Mean per-image PSNR of the reconstructions, in dB (images span [-1, 1])."""
        from torchmetrics.functional.image import peak_signal_noise_ratio

        psnr = peak_signal_noise_ratio(self(images).clamp(-1, 1).float(), images.float(), data_range=2.0, reduction="none", dim=(1, 2, 3))
        return {"psnr": psnr.mean().item()}


ENCODER_CLASSES = {"cnn": EmotionCNN, "vae": FaceVAE, "judge": EmotionJudge, "judge2": TransformerJudge, "guide": NoisyEmotionClassifier}
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


def load_encoder(directory: str | Path) -> ModelMixin:
    """Load an encoder from a model directory, or a shipped one by name (cnn, vae, judge).

    The class comes from ``_class_name`` in config.json; weights load as float32 whatever their
    stored precision (the shipped ones are fp16).
    """
    if str(directory) in ENCODER_CLASSES and not Path(directory).exists():
        directory = SHIPPED_WEIGHTS / str(directory)
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (no config.json)")
    try:
        class_name = json.loads(config_file.read_text()).get("_class_name")
    except (ValueError, AttributeError):
        raise ValueError(f"{config_file}: not a model config (expected JSON with _class_name)") from None
    for cls in ENCODER_CLASSES.values():
        if cls.__name__ == class_name:
            try:
                return cls.from_pretrained(directory, torch_dtype=torch.float32, use_safetensors=True).eval()
            except (OSError, ValueError) as error:
                raise ValueError(f"{directory}: cannot load this {class_name} ({str(error).splitlines()[0]})") from None
    names = ", ".join(cls.__name__ for cls in ENCODER_CLASSES.values())
    raise ValueError(f"{config_file}: _class_name {class_name!r} is not an encoder ({names})")
