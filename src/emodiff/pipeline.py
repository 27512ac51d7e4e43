"""Expression editing and sampling with a trained EmotionDenoiser.

A model directory holds ``denoiser/`` (EMA weights), ``scheduler/`` (the sampling scheduler's
config) and, for the semantic variants, ``encoder/``. Schedulers swap the diffusers way::

    pipe = EmotionEditPipeline.from_pretrained("runs/label")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    happy = pipe.edit(Image.open("face.png"), "happy")

Edit modes: ``paper`` starts from pure noise with the target label and the input's code (the
paper's manipulation); ``sdedit`` noises the input to strength*T and denoises; ``invert`` runs
deterministic DDIM inversion of the input under its source label to strength*T, then decodes under
the target label (the stochastic encoding of Diffusion Autoencoders), which keeps the person.
``keep_detail`` (the default with ``invert``) adds only the edit's change over the decode under
the source emotion to the input, so detail the model cannot reproduce stays the input's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from .data import IMAGE_SIZE, parse_emotion, to_tensor, to_uint8
from .denoiser import NULL_LABEL, EmotionDenoiser
from .encoders import EmotionClassifier, load_encoder
from .files import save_model_dir

MODES = ("paper", "sdedit", "invert")
SCHEDULERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}
DEFAULT_MODEL = Path(__file__).parent / "weights" / "default"
CPU_CHUNK = 64


def face_noise(face: np.ndarray, seed: int) -> torch.Tensor:
    """(1, 48, 48) standard normal noise determined by ``seed`` and the uint8 face's pixels."""
    digest = hashlib.sha256(seed.to_bytes(8, "little", signed=True) + np.ascontiguousarray(face).tobytes()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randn(1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on AMX/AVX512-BF16 CPUs and on CUDA GPUs that support it."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def training_scheduler() -> DDPMScheduler:
    """The paper's forward process: 1000 steps, linear betas 1e-4..0.02."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def sampling_scheduler(name: str = "ddim", base=None):
    """A sampler over the training betas: 'trailing' spacing so few steps still start at t = T. x0
    clipping is switched per call by the pipeline (on from noise, off when decoding an inversion)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    # as keyword overrides: from_config drops keys the base config took as defaults
    return SCHEDULERS[name].from_config((base or training_scheduler()).config, timestep_spacing="trailing")


@dataclass(frozen=True)
class EditSettings:
    """How to edit; the defaults are the sweep's choice for the shipped model (README, docs/sweep)."""

    mode: str = "invert"
    strength: float = 0.4
    steps: int = 10
    guidance: float = 7.0
    # Add only the edit's change to the input: (decode under the target) - (decode under the source
    # emotion, from the same start). What the model cannot reconstruct at 48x48 (texture, fine
    # detail) then stays the input's own, and editing to the source emotion returns the input.
    # Costs one more decode per face unless the source emotion is a target. None: on in invert mode
    # (where the sweep measured it), else off.
    keep_detail: bool | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.keep_detail is None:
            object.__setattr__(self, "keep_detail", self.mode == "invert")
        if self.keep_detail and self.mode == "paper":
            raise ValueError("keep_detail needs a mode that starts from the input (invert or sdedit), not paper")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength {self.strength} is outside (0, 1]")
        if self.steps <= 0:
            raise ValueError(f"steps must be a positive number of denoising steps, got {self.steps}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")

    @classmethod
    def from_options(cls, options) -> EditSettings:
        """The settings named by parsed command-line options (edit, demo, evaluate, reproduce-table1 share them)."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)})


def as_gray(image) -> Image.Image:
    """A PIL image or an (H, W) / (H, W, C) uint8 array as a grayscale PIL image."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
    return image.convert("L")


class EmotionEditPipeline:
    def __init__(self, denoiser: EmotionDenoiser, scheduler, encoder=None, classifier=None):
        if denoiser.uses_code and encoder is None:
            raise ValueError(f"a {denoiser.config.cond!r} denoiser needs its semantic encoder")
        self.denoiser = denoiser.eval()
        self.scheduler = scheduler
        self.encoder = encoder.eval() if encoder is not None else None
        self._classifier = classifier
        self.to(next(denoiser.parameters()).device)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str = "auto") -> EmotionEditPipeline:
        if directory is None and not (DEFAULT_MODEL / "denoiser").is_dir():
            raise FileNotFoundError(
                "this installation has no default model: pass --model DIR (a directory written by 'emodiff train')"
            )
        directory = Path(directory) if directory else DEFAULT_MODEL
        if not (directory / "denoiser" / "config.json").is_file():
            raise FileNotFoundError(
                f"{directory}: not an emodiff model directory (expected denoiser/config.json, "
                "scheduler/scheduler_config.json and, for cnn/vae models, encoder/)"
            )
        denoiser = EmotionDenoiser.from_pretrained(directory / "denoiser", torch_dtype=torch.float32)
        scheduler_config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
        by_class = {c.__name__: c for c in SCHEDULERS.values()}
        scheduler = by_class.get(scheduler_config.get("_class_name"), DDIMScheduler).from_config(scheduler_config)
        encoder = load_encoder(directory / "encoder") if denoiser.uses_code else None
        return cls(denoiser, scheduler, encoder).to(device)

    def save_pretrained(self, directory: str | Path, fp16: bool = False) -> None:
        directory = Path(directory)
        for name, model in (("denoiser", self.denoiser), ("encoder", self.encoder)):
            if model is not None:
                save_model_dir(model, directory / name, fp16=fp16)
        (directory / "scheduler").mkdir(parents=True, exist_ok=True)
        self.scheduler.save_config(directory / "scheduler")

    def to(self, device: str | torch.device = "auto", bf16: bool | None = None) -> EmotionEditPipeline:
        """Move to ``device``; ``bf16`` autocast defaults to on where the hardware supports it."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.bf16 = bf16_supported(self.device) if bf16 is None else bf16
        for model in (self.denoiser, self.encoder, self._classifier):
            if model is not None:
                model.to(self.device)
        return self

    @property
    def classifier(self) -> EmotionClassifier:
        """Predicts an input's source emotion when none is given: the model's CNN, else the shipped one."""
        if self._classifier is None:
            own = self.encoder if isinstance(self.encoder, EmotionClassifier) else None
            self._classifier = own or load_encoder("cnn").to(self.device)
        return self._classifier

    # ------------------------------------------------------------------ public API

    def edit(self, images, targets, *, source=None, settings: EditSettings | None = None, seed: int = 0, **overrides):
        """Edit face(s) to target emotion(s); returns PIL images at each input's size.

        ``images``: one image or a list; ``targets``: one emotion (name or 0..6) or a list;
        ``source``: the inputs' true emotion(s) for ``invert`` mode (default: predicted).
        One image gives a list over targets, a list of images a list of such lists; a single
        target drops that level too. ``overrides`` are EditSettings fields (mode, strength, ...).
        """
        settings = dataclasses.replace(settings or EditSettings(), **overrides)
        single_image, single_target = not isinstance(images, (list, tuple)), not isinstance(targets, (list, tuple))
        images = [as_gray(image) for image in ([images] if single_image else images)]
        labels = [parse_emotion(t) for t in ([targets] if single_target else targets)]
        if source is not None:
            sources = [parse_emotion(s) for s in (source if isinstance(source, (list, tuple)) else [source] * len(images))]
        else:
            sources = None
        faces = np.stack([np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)) for image in images])
        edited = self.edit_faces(faces, labels, settings, source_labels=sources, seed=seed)
        results = [[Image.fromarray(face).resize(image.size, Image.BICUBIC) for face in row] for image, row in zip(images, edited)]
        results = [row[0] if single_target else row for row in results]
        return results[0] if single_image else results

    @torch.inference_mode()
    def sample(self, emotion, n: int = 1, *, steps: int = 50, guidance: float = 3.0, seed: int = 0) -> list[Image.Image]:
        """Random faces showing ``emotion`` (null semantic code for the cnn/vae variants)."""
        label = parse_emotion(emotion)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(self.device)
        timesteps = self._timesteps(steps, 1.0)
        labels = torch.full((n,), label, dtype=torch.long, device=self.device)
        faces = self._denoise(noise, timesteps, labels, None, guidance, generator)
        return [Image.fromarray(face) for face in to_uint8(faces)]

    @torch.inference_mode()
    def edit_faces(
        self,
        faces: np.ndarray,
        targets: list[int],
        settings: EditSettings = EditSettings(),
        source_labels: list[int] | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """uint8 (B, 48, 48) faces -> uint8 (B, len(targets), 48, 48): every target of every face in one batch.

        Each face's noise is drawn from ``seed`` and the face's own pixels: different faces start
        from different noise, as the paper's independent samples do, and with the deterministic
        samplers (DDIM, DPM-Solver) a face's edits do not depend on which other faces share the batch.
        """
        x0 = to_tensor(faces).to(self.device)
        count, per_face = len(faces), len(targets)
        codes = self._codes(x0)
        timesteps = self._timesteps(settings.steps, 1.0 if settings.mode == "paper" else settings.strength)
        noise = torch.stack([face_noise(face, seed) for face in faces]).to(self.device)
        source = None
        if settings.mode == "invert" or settings.keep_detail:
            if source_labels is None:
                source = self.classifier.predict_proba(x0).argmax(-1)
            else:
                source = torch.tensor(source_labels, device=self.device)
        if settings.mode == "paper":
            start = noise * self.scheduler.init_noise_sigma
        elif settings.mode == "sdedit":
            start = self.scheduler.add_noise(x0, noise, timesteps[:1].repeat(count))
        else:
            start = self._invert(x0, timesteps, source, codes)
        rows = [list(targets) for _ in range(count)]  # the emotions each face is decoded under
        if settings.keep_detail:  # the source emotion's decode is the reference of the change: once per face
            for row, own in zip(rows, source.tolist()):
                if own not in row:
                    row.append(own)
        which_face = torch.tensor([face for face, row in enumerate(rows) for _ in row], device=self.device)
        labels = torch.tensor([label for row in rows for label in row], device=self.device)
        gather = lambda t: None if t is None else t[which_face]  # noqa: E731
        generator = torch.Generator().manual_seed(seed)
        clip_x0 = settings.mode != "invert"
        decoded = self._denoise(gather(start), timesteps, labels, gather(codes), settings.guidance, generator, clip_x0)
        first = np.cumsum([0] + [len(row) for row in rows])[:-1]  # each face's first decode
        edited = decoded[[begin + j for begin in first for j in range(per_face)]].reshape(count, per_face, *x0.shape[1:])
        if settings.keep_detail:
            reference = decoded[[begin + row.index(own) for begin, row, own in zip(first, rows, source.tolist())]]
            edited = (x0[:, None] + edited - reference[:, None]).clamp(-1, 1)
        return to_uint8(edited.flatten(0, 1)).reshape(count, per_face, *faces.shape[1:])

    # ------------------------------------------------------------------ the diffusion steps

    def _autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _codes(self, x0: torch.Tensor) -> torch.Tensor | None:
        if not self.denoiser.uses_code:
            return None
        return self.encoder.encode(x0).float()

    def _timesteps(self, steps: int, strength: float) -> torch.Tensor:
        """The last ``strength`` fraction of the scheduler's ``steps`` timesteps (all for strength 1)."""
        self.scheduler.set_timesteps(steps, device=self.device)
        keep = max(1, round(strength * len(self.scheduler.timesteps)))
        begin = len(self.scheduler.timesteps) - keep
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)
        return self.scheduler.timesteps[begin:]

    def _eps(self, x, t, labels, codes, guidance: float) -> torch.Tensor:
        """Noise prediction with classifier-free guidance on the label (the code is kept in both halves)."""
        timestep = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
        if guidance == 1.0:
            return self._predict(x, timestep, labels, codes)
        doubled = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
        null = torch.full_like(labels, NULL_LABEL)
        both = self._predict(doubled(x), doubled(timestep), torch.cat([labels, null]), doubled(codes))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    def _predict(self, x, timestep, labels, codes) -> torch.Tensor:
        """The denoiser over ``x`` in pieces of at most CPU_CHUNK on a CPU: measured there, a 48x48 batch
        of 280 runs at 90 images/s and pieces of 64 at 205 (caches); a GPU takes the batch whole."""
        size = CPU_CHUNK if self.device.type == "cpu" else len(x)
        pieces = []
        with self._autocast():
            for i in range(0, len(x), size):
                piece_codes = None if codes is None else codes[i : i + size]
                pieces.append(self.denoiser(x[i : i + size], timestep[i : i + size], labels[i : i + size], piece_codes).float())
        return torch.cat(pieces)

    def _denoise(self, x, timesteps, labels, codes, guidance, generator, clip_x0: bool = True) -> torch.Tensor:
        """Run the sampler; ``clip_x0`` keeps its x0 estimates in [-1, 1] with the scheduler's own clipping
        (thresholding for DPM-Solver), which steadies generation from noise. Off when decoding an
        inversion, whose unclipped path it must mirror."""
        key = "clip_sample" if "clip_sample" in inspect.signature(type(self.scheduler)).parameters else "thresholding"
        before = self.scheduler.config[key]
        self.scheduler.register_to_config(**{key: clip_x0})
        try:
            for t in timesteps:
                eps = self._eps(x, t, labels, codes, guidance)
                x = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        finally:
            self.scheduler.register_to_config(**{key: before})
        return x.clamp(-1, 1)

    def _invert(self, x0, timesteps, labels, codes) -> torch.Tensor:
        """Deterministic DDIM inversion along exactly the timesteps the decoder will visit, reversed.

        Written out (rather than DDIMInverseScheduler) because the path must mirror whichever
        scheduler decodes, truncated at the edit strength.
        """
        alphas = self.scheduler.alphas_cumprod.to(x0.device)
        x, alpha_prev = x0, torch.tensor(1.0, device=x0.device)
        for t in timesteps.flip(0):
            eps = self._eps(x, t, labels, codes, guidance=1.0)
            alpha = alphas[int(t)]
            clean = (x - (1 - alpha_prev).sqrt() * eps) / alpha_prev.sqrt()
            x, alpha_prev = alpha.sqrt() * clean + (1 - alpha).sqrt() * eps, alpha
        return x
