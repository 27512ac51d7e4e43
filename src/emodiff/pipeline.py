"""Expression editing and sampling with a trained EmotionDenoiser.

A model directory holds ``denoiser/`` (EMA weights), ``scheduler/`` (the sampler's config) and,
for the semantic variants, ``encoder/``. Schedulers swap the diffusers way::

    pipe = EmotionEditPipeline.from_pretrained("runs/label")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    happy = pipe.edit(Image.open("face.png"), "happy")

``pipe.scheduler`` is only the template: every call builds its own scheduler from that config
with the call's settings, so one pipeline serves any number of edits at once and no call changes
what the next one sees.

Edit modes: ``paper`` starts from pure noise with the target label and the input's code (the
paper's manipulation); ``sdedit`` noises the input to strength*T and denoises; ``invert`` runs
deterministic DDIM inversion of the input under its source label to strength*T, then decodes under
the target label (the stochastic encoding of Diffusion Autoencoders), which keeps the person.
``keep_detail`` (the default with ``invert``) adds only the edit's change over the decode under
the source emotion to the input, so detail the model cannot reproduce stays the input's own.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from .data import IMAGE_SIZE, TYPICAL_LEVEL, TYPICAL_REGION, to_tensor, to_uint8
from .denoiser import NULL_LABEL, EmotionDenoiser
from .devices import autocast, batch_piece, bf16_supported, resolve_device
from .encoders import SHIPPED_WEIGHTS, EmotionClassifier, NoisyEmotionClassifier, load_encoder
from .files import atomic_write, save_model_dir
from .labels import EMOTIONS, parse_emotion
from .settings import DEFAULT_GUIDANCE, NEGATIVES, SAMPLERS, EditSettings

if TYPE_CHECKING:
    from . import photos

SCHEDULERS = dict(zip(SAMPLERS, (DDIMScheduler, DPMSolverMultistepScheduler, DDPMScheduler)))
DEFAULT_MODEL = Path(__file__).parent / "weights" / "default"
# A model's own edit settings per target emotion, e.g. {"guidance": {"angry": 9.0, "happy": 5.0},
# "classifier_guidance": {"angry": 15.0}, "negative": {"surprise": "source"}}: what an edit gets
# when the settings name none.
EDIT_DEFAULTS = "edit_defaults.json"
PER_EMOTION_SETTINGS = {"guidance": DEFAULT_GUIDANCE, "classifier_guidance": 0.0, "negative": "null"}  # and their value for emotions left out


class ModelLoadError(ValueError):
    """A model directory that is missing parts or holds unreadable files."""


def face_noise(face: np.ndarray, seed: int) -> torch.Tensor:
    """(1, 48, 48) standard normal noise determined by ``seed`` and the uint8 face's pixels."""
    digest = hashlib.sha256(seed.to_bytes(8, "little", signed=True) + np.ascontiguousarray(face).tobytes()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randn(1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def training_scheduler() -> DDPMScheduler:
    """The paper's forward process: 1000 steps, linear betas 1e-4..0.02."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def sampling_scheduler(name: str = "ddim", base=None):
    """A sampler over the training betas: 'trailing' spacing so few steps still start at t = T."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    # as keyword overrides: from_config drops keys the base config took as defaults
    return SCHEDULERS[name].from_config((base or training_scheduler()).config, timestep_spacing="trailing")


def _clip_key(scheduler_class) -> str:
    """The config key that keeps x0 estimates in [-1, 1]: clip_sample, or DPM-Solver's thresholding."""
    return "clip_sample" if "clip_sample" in inspect.signature(scheduler_class).parameters else "thresholding"


class FaceEditor(abc.ABC):
    """What every editor shares: crops and photos in, edited images out, through one photo path.

    A subclass gives ``edit_faces`` (uint8 48x48 faces -> their edits), ``device`` and ``to``; the
    diffusion pipeline and the GAN (``gan.GanEditor``) are two such editors, so ``emodiff edit``,
    the evaluations and the web app take either.
    """

    @abc.abstractmethod
    def edit_faces(self, faces: np.ndarray, targets: list[int], settings: EditSettings, source_labels=None, seed: int = 0,
                   shown: photos.Shown | None = None) -> np.ndarray:  # fmt: skip
        """uint8 (B, 48, 48) faces -> uint8 (B, len(targets), 48, 48). ``shown``: what the output will
        show of each edit (a photo's paste-back), for an editor that judges its edits as it makes
        them; None: the edit as it is."""

    def edit(self, images, targets, *, source=None, face: str = "largest", settings: EditSettings | None = None, seed: int = 0, **overrides):
        """Edit face crops or photos to target emotion(s); returns PIL images at each input's size.

        ``images``: one image or a list (PIL, or uint8 arrays (H, W), (H, W, 3), (H, W, 4)); an
        input up to 64x64 is a face crop, a larger one a photo whose ``face`` (largest, all, or an
        index from the left) is found, edited and put back, exactly as ``emodiff edit`` does.
        ``targets``: one emotion (name or 0..6) or a list; ``source``: the inputs' true emotion(s)
        for ``invert`` mode (default: predicted). One image gives a list over targets, a list of
        images a list of such lists; a single target drops that level too. ``overrides`` are
        EditSettings fields (mode, strength, ...).
        """
        from . import photos

        # built from the overrides, so defaults that depend on the mode (keep detail, the push) follow an overridden one
        settings = EditSettings(**overrides) if settings is None else dataclasses.replace(settings, **overrides)
        single_image, single_target = not isinstance(images, (list, tuple)), not isinstance(targets, (list, tuple))
        labels = [parse_emotion(t) for t in ([targets] if single_target else targets)]
        prepare = photos.Preparer(face)
        prepared = [prepare(photos.as_image(image)) for image in ([images] if single_image else images)]
        if source is not None:
            per_input = source if isinstance(source, (list, tuple)) else [source] * len(prepared)
            sources = [parse_emotion(s) for s, p in zip(per_input, prepared) for _ in range(len(p.crops))]
        else:
            sources = None
        results, _, _ = self.edit_prepared(prepared, labels, settings, source_labels=sources, seed=seed)
        results = [row[0] if single_target else row for row in results]
        return results[0] if single_image else results

    def edit_prepared(self, prepared: list, targets: list[int], settings: EditSettings, source_labels=None, seed: int = 0):
        """Edit the faces of several prepared inputs (``photos.Prepared``) in one batch.

        Returns the output images (per input, per target), the edited crops (all faces, T, 48, 48)
        and the offsets of each input's faces in them.
        """
        from . import photos

        crops = np.concatenate([p.crops for p in prepared])
        shown = [p.shown() for p in prepared]
        shown = None if all(s is None for s in shown) else photos.Shown.concat([s or photos.Shown.whole(p.crops) for s, p in zip(shown, prepared)])
        edits = self.edit_faces(crops, targets, settings, source_labels=source_labels, seed=seed, shown=shown)
        bounds = np.cumsum([0] + [len(p.crops) for p in prepared])
        return [p.render(edits[start:end]) for p, start, end in zip(prepared, bounds[:-1], bounds[1:])], edits, bounds


LOCALISE_BLUR = 2.0  # pixels of a 48x48 face: a brow or a mouth corner, not a single pixel's noise


@dataclasses.dataclass(frozen=True)
class Harder:
    """The scales a decode goes on with once ``weak`` names its row (EditSettings.push_threshold):
    ``weak(estimate, unread)`` takes a step's estimate of every clean row and which rows are still
    gentle (bool, one per row), and returns the rows to push from the next step on, or from this one
    with ``same_step`` (EditSettings.push_same_step)."""

    guidance: float | torch.Tensor
    classifier_guidance: float | torch.Tensor
    weak: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    same_step: bool = False


def within_budget(faces: torch.Tensor, edits: torch.Tensor, levels: float) -> torch.Tensor:
    """Edits (B, T, 1, H, W) of ``faces`` (B, 1, H, W), both in [-1, 1], each with its change scaled
    down to a mean of ``levels`` grey levels where it is larger (EditSettings.max_change)."""
    change = edits - faces[:, None]
    size = change.abs().mean(dim=(-3, -2, -1), keepdim=True) * 127.5  # grey levels
    return faces[:, None] + change * (levels / size).clamp(max=1)


def change_mask(change: torch.Tensor, levels: float) -> torch.Tensor:
    """Where a change (B, 1, H, W, in [-1, 1] units) is applied: 0 where its magnitude, blurred by a
    Gaussian of LOCALISE_BLUR pixels, is under ``levels`` / 2 grey levels, 1 from ``levels`` up, a
    smoothstep between; then grown by twice the blur and blurred again, so the mask fades over a few
    pixels outside the change instead of stepping, and stays 1 on it. The blur's support is finite,
    so the input stays exactly itself far from what the expression moves."""
    radius = int(3 * LOCALISE_BLUR)
    taps = torch.exp(-(torch.arange(-radius, radius + 1, device=change.device, dtype=torch.float32) ** 2) / (2 * LOCALISE_BLUR**2))
    taps = taps / taps.sum()

    def blur(image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
        return F.conv2d(F.conv2d(padded, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))

    ramp = ((blur(change.abs().float() * 127.5) - levels / 2) / (levels / 2)).clamp(0, 1)  # grey levels
    grow = int(2 * LOCALISE_BLUR)
    grown = F.max_pool2d(ramp * ramp * (3 - 2 * ramp), 2 * grow + 1, stride=1, padding=grow)
    return blur(grown).clamp(0, 1)


# The mouth in a FER-2013 crop, as fractions of its side (dlib's 68 landmarks on 600 Training faces: the
# lips' centre, median, at (0.496, 0.783); 0.32 wide and 0.14 high): mouth_strength's region, its
# radii wide enough for the corners' reach and an opening mouth. The deeper strength holds in full
# within 0.7 of them (in squared normalised distance) and fades to the face's strength by 1.3.
MOUTH_CENTRE, MOUTH_RADII, MOUTH_FADE = (0.496, 0.783), (0.24, 0.16), (0.7, 1.3)


def strength_map(size: int, strength: float, mouth_strength: float) -> torch.Tensor:
    """(1, 1, size, size): each pixel's edit strength, ``mouth_strength`` over the mouth (MOUTH_CENTRE),
    ``strength`` elsewhere."""
    along = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    ys, xs = torch.meshgrid(along, along, indexing="ij")
    distance = ((xs - MOUTH_CENTRE[0]) / MOUTH_RADII[0]) ** 2 + ((ys - MOUTH_CENTRE[1]) / MOUTH_RADII[1]) ** 2
    weight = ((MOUTH_FADE[1] - distance) / (MOUTH_FADE[1] - MOUTH_FADE[0])).clamp(0, 1)
    return (strength + (mouth_strength - strength) * weight)[None, None]


# A face's contrast over FER's typical one is taken within these: a flat face (a portrait's crop is
# at 0.4 to 0.65) is stretched to the typical contrast, at most 4x; one with more contrast than
# typical is left at its own. Measured on the reporting faces: compressing those too (limit 4)
# made their changes larger when scaled back, 84% of edits the same person against 87%.
CONTRAST_LIMITS = (0.25, 1.0)


def to_typical_level(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces (B, 1, H, W in [-1, 1]) brought to FER-2013's typical brightness (``data.TYPICAL_LEVEL``)
    in their central region, and flat ones to its typical contrast (CONTRAST_LIMITS); and each
    face's contrast over the one it is edited at (B, 1, 1, 1, at most 1): an edit's change times it
    is the change at the face's own contrast."""
    centre = x0[(..., *TYPICAL_REGION)].flatten(1)
    mean, std = centre.mean(1).view(-1, 1, 1, 1), centre.std(1, correction=0).view(-1, 1, 1, 1)
    typical_mean, typical_std = TYPICAL_LEVEL[0] / 127.5 - 1, TYPICAL_LEVEL[1] / 127.5
    contrast = (std / typical_std).clamp(*CONTRAST_LIMITS)
    return ((x0 - mean) / contrast + typical_mean).clamp(-1, 1), contrast


class EmotionEditPipeline(FaceEditor):
    def __init__(self, denoiser: EmotionDenoiser, scheduler, encoder=None, classifier=None, edit_defaults: dict | None = None, guide=None):
        """``edit_defaults``: the guidance and classifier guidance an edit to each emotion gets when
        the settings name none ({"guidance": {emotion name: scale}, "classifier_guidance": {...}};
        emotions left out get PER_EMOTION_SETTINGS' values), saved with the model. ``guide``: the
        noise-aware classifier of ``classifier_guidance`` (default: the model directory's
        ``guide/``, else the shipped one, loaded when first asked for)."""
        if denoiser.uses_code and encoder is None:
            raise ValueError(f"a {denoiser.config.cond!r} denoiser needs its semantic encoder")
        self.denoiser = denoiser.eval()
        self.scheduler = scheduler
        self.encoder = encoder.eval() if encoder is not None else None
        self._classifier = classifier
        self._guide = guide
        unknown = set(edit_defaults or {}) - set(PER_EMOTION_SETTINGS)
        if unknown:
            raise ValueError(f"unknown edit defaults {sorted(unknown)}: expected {', '.join(PER_EMOTION_SETTINGS)}")
        self.edit_defaults = {}
        for name, by_emotion in (edit_defaults or {}).items():
            if not isinstance(by_emotion, dict):
                raise ValueError(f"{name!r} must map emotion names to settings, got {by_emotion!r}")
            if name == "negative":
                self.edit_defaults[name] = {EMOTIONS[parse_emotion(k)]: v for k, v in by_emotion.items()}
                if any(v not in NEGATIVES for v in self.edit_defaults[name].values()):
                    raise ValueError(f"negative must be one of {', '.join(NEGATIVES)} for every emotion, got {self.edit_defaults[name]}")
                continue
            self.edit_defaults[name] = {EMOTIONS[parse_emotion(k)]: float(v) for k, v in by_emotion.items()}
            if any(v < 0 for v in self.edit_defaults[name].values()):
                raise ValueError(f"{name} must be >= 0 for every emotion, got {self.edit_defaults[name]}")
        self.to(next(denoiser.parameters()).device)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls, directory: str | Path | None = None, *, scheduler: str | None = None, device: str = "auto"
    ) -> EmotionEditPipeline:
        """Load a model directory (default: the shipped model); ``scheduler`` names a sampler to use
        instead of the stored one (ddim, dpm, ddpm). Only safetensors weights are ever read."""
        if directory is None and not (DEFAULT_MODEL / "denoiser").is_dir():
            raise FileNotFoundError(
                "this installation has no default model: pass --model DIR (a directory written by 'emodiff train')"
            )
        target = resolve_device(device)  # an absent CUDA is refused before anything loads
        directory = Path(directory) if directory else DEFAULT_MODEL
        if not (directory / "denoiser" / "config.json").is_file():
            raise FileNotFoundError(
                f"{directory}: not an emodiff model directory (expected denoiser/config.json, "
                "scheduler/scheduler_config.json and, for cnn/vae models, encoder/)"
            )
        try:
            denoiser = EmotionDenoiser.from_pretrained(directory / "denoiser", torch_dtype=torch.float32, use_safetensors=True)
            stored = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
            encoder = load_encoder(directory / "encoder") if denoiser.uses_code else None
            guide = load_encoder(directory / "guide") if (directory / "guide").is_dir() else None
            if guide is not None and not isinstance(guide, NoisyEmotionClassifier):
                raise ValueError(f"guide/ holds a {type(guide).__name__}, expected a NoisyEmotionClassifier (emodiff train-encoder guide)")
            defaults = json.loads((directory / EDIT_DEFAULTS).read_text()) if (directory / EDIT_DEFAULTS).is_file() else {}
            if not isinstance(defaults, dict):
                raise ValueError(f"{EDIT_DEFAULTS}: expected a JSON object like {{\"guidance\": {{\"angry\": 9}}}}")
        except (OSError, ValueError) as error:  # unreadable files; a corrupt safetensors file raises ValueError
            raise ModelLoadError(f"{directory}: cannot load this model directory ({error})") from None
        by_class = {c.__name__: c for c in SCHEDULERS.values()}
        template = by_class.get(stored.get("_class_name"), DDIMScheduler).from_config(stored)
        if scheduler is not None:
            template = sampling_scheduler(scheduler, template)
        try:
            pipeline = cls(denoiser, template, encoder, edit_defaults=defaults, guide=guide)
        except (ValueError, TypeError) as error:  # FERDataError (an unknown emotion name) is a ValueError
            raise ModelLoadError(f"{directory / EDIT_DEFAULTS}: {error}") from None
        return pipeline.to(target)

    def save_pretrained(self, directory: str | Path, fp16: bool = False) -> None:
        directory = Path(directory)
        for name, model in (("denoiser", self.denoiser), ("encoder", self.encoder), ("guide", self._guide)):
            if model is not None:
                save_model_dir(model, directory / name, fp16=fp16)
        (directory / "scheduler").mkdir(parents=True, exist_ok=True)
        self.scheduler.save_config(directory / "scheduler")
        if self.edit_defaults:
            text = json.dumps(self.edit_defaults, indent=2)
            atomic_write(directory / EDIT_DEFAULTS, lambda temp: temp.write_text(text))

    def with_edit_defaults(self, edit_defaults: dict) -> EmotionEditPipeline:
        """The same models (shared, not copied) under other per-emotion scales: a sweep measures the
        scales it chose without changing the pipeline that chose them."""
        return type(self)(self.denoiser, self.scheduler, self.encoder, self._classifier, edit_defaults, self._guide).to(self.device, self.bf16)

    def to(self, device: str | torch.device = "auto", bf16: bool | None = None) -> EmotionEditPipeline:
        """Move to ``device``; ``bf16`` autocast defaults to on where the hardware supports it."""
        self.device = resolve_device(device)
        self.bf16 = bf16_supported(self.device) if bf16 is None else bf16
        for model in (self.denoiser, self.encoder, self._classifier, self._guide):
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

    @property
    def guide(self) -> NoisyEmotionClassifier:
        """The noise-aware classifier ``classifier_guidance`` follows: the model's own, else the shipped one."""
        if self._guide is None:
            if not (SHIPPED_WEIGHTS / "guide" / "config.json").is_file():
                raise FileNotFoundError("classifier guidance needs a guiding classifier: this installation ships none "
                                        "(train one with 'emodiff train-encoder guide' and put it in the model directory as guide/)")  # fmt: skip
            self._guide = load_encoder("guide").to(self.device)
        if any(t.is_inference() for t in self._guide.state_dict().values()):
            # loaded under inference mode (first asked for inside an edit, or by a caller's own
            # inference_mode): autograd cannot use such weights, so make them ordinary tensors
            with torch.inference_mode(False):
                self._guide.load_state_dict({k: v.clone() for k, v in self._guide.state_dict().items()}, assign=True)
        return self._guide

    # ------------------------------------------------------------------ sampling and editing

    @torch.inference_mode()
    def sample(self, emotion, n: int = 1, *, steps: int = 50, guidance: float = 3.0, seed: int = 0) -> list[Image.Image]:
        """Random faces showing ``emotion`` (null semantic code for the cnn/vae variants)."""
        label = parse_emotion(emotion)
        scheduler = self._scheduler(clip_x0=True)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(self.device)
        timesteps = self._timesteps(scheduler, steps, 1.0)
        labels = torch.full((n,), label, dtype=torch.long, device=self.device)
        faces = self._denoise(scheduler, noise, timesteps, labels, None, guidance, generator)
        return [Image.fromarray(face) for face in to_uint8(faces)]

    @torch.inference_mode()
    def edit_faces(
        self,
        faces: np.ndarray,
        targets: list[int],
        settings: EditSettings = EditSettings(),
        source_labels: list[int] | None = None,
        seed: int = 0,
        shown: photos.Shown | None = None,
    ) -> np.ndarray:
        """uint8 (B, 48, 48) faces -> uint8 (B, len(targets), 48, 48): every target of every face in one batch.

        Each face's noise is drawn from ``seed`` and the face's own pixels: different faces start
        from different noise, as the paper's independent samples do, and with the deterministic
        samplers (DDIM, DPM-Solver) a face's edits do not depend on which other faces share the
        batch, up to the rounding of the kernels PyTorch picks for each batch size: at most one grey
        level in fp32 (``pipe.to(device, bf16=False)``), but up to 12 of 255 on the bundled faces
        under bf16 autocast, the default where the hardware has it.

        Each target's guidance pushes away from its own ``negative`` (per emotion): with keep
        detail, an edit is its decode minus a decode of the source emotion, and that reference is
        decoded as the target is (pushed away from the same label), once per kind of negative per
        face; a reference guided from null under a target pushed away from the source would leave
        the null direction's pull in the change. Everything else (the inversion, the source
        emotion) is shared, and all decodes run as one batch.

        With ``push_threshold``, after each decoding step the model's CNN reads the edits that step's
        clean estimates make, and each target's decode that does not read yet goes on at the higher
        scales (``Harder``; with ``push_same_step`` it takes that very step at them, the same model
        passes recombined): one small CNN pass per step rather than a second edit. With ``shown`` (a
        photo's, ``photos.Prepared.shown``) it reads each edit as the photo will show it: the change
        weighted by the paste-back's reach, over the face as the photo keeps it (with what covers it),
        so a change the paste-back leaves out does not count as read.
        """
        kinds = self._negatives(settings.negative, targets)
        x0 = to_tensor(faces).to(self.device)
        count, per_face = len(faces), len(targets)
        # the model sees the face at FER's typical level when normalising, its change is scaled back below
        seen, contrast = to_typical_level(x0) if settings.normalise else (x0, None)
        codes = self._codes(seen)
        # x0 clipping steadies generation from noise; decoding an inversion must mirror its unclipped path
        scheduler = self._scheduler(clip_x0=settings.mode != "invert")
        timesteps = self._timesteps(scheduler, settings.steps, 1.0 if settings.mode == "paper" else max(settings.strength, settings.mouth_strength))
        noise = torch.stack([face_noise(face, seed) for face in faces]).to(self.device)
        source = None
        if settings.mode == "invert" or settings.keep_detail or "source" in kinds:
            if source_labels is None:
                source = self.classifier.predict_proba(seen).argmax(-1)
            else:
                source = torch.tensor(source_labels, device=self.device)
        if settings.mode == "paper":
            start = noise * scheduler.init_noise_sigma
        elif settings.mode == "sdedit":
            start = scheduler.add_noise(seen, noise, timesteps[:1].repeat(count))
        else:
            path = self._invert(scheduler, seen, timesteps, source, codes)
            start = path[0]
        # what each face is decoded under: (emotion, negative) for its targets, then its own emotion
        # once per kind of negative as the reference of the change (unless a target is already that)
        rows = [list(zip(targets, kinds)) for _ in range(count)]
        if settings.keep_detail:
            for row, own in zip(rows, source.tolist()):
                row += [(own, kind) for kind in dict.fromkeys(kinds) if (own, kind) not in row]
        which_face = torch.tensor([face for face, row in enumerate(rows) for _ in row], device=self.device)
        labels = torch.tensor([label for row in rows for label, _ in row], device=self.device)
        gather = lambda t: None if t is None else t[which_face]  # noqa: E731
        generator = torch.Generator().manual_seed(seed)
        guidance = self._per_emotion("guidance", settings.guidance, labels)
        push = self._per_emotion("classifier_guidance", settings.classifier_guidance, labels)
        negatives = None  # the null label for every row
        if set(kinds) != {"null"}:  # a named emotion's label, the face's own (below), else null
            per_row = [kind for row in rows for _, kind in row]
            negatives = torch.tensor([NULL_LABEL if kind in ("null", "source") else parse_emotion(kind) for kind in per_row], device=self.device)
            if "source" in kinds:
                away = torch.tensor([kind == "source" for kind in per_row], device=self.device)
                negatives = torch.where(away, gather(source), negatives)
        held = None
        if settings.mouth_strength:  # the rest of the face keeps to the inversion's path until its own strength
            held = (strength_map(x0.shape[-1], settings.strength, settings.mouth_strength).to(self.device), [gather(x) for x in path])
        first = np.cumsum([0] + [len(row) for row in rows])[:-1]  # each face's first decode
        target_rows = [begin + j for begin in first for j in range(per_face)]
        if settings.keep_detail:  # each target's reference: the source decode under the target's negative
            picks = [begin + row.index((own, kind)) for begin, row, own in zip(first, rows, source.tolist()) for kind in kinds]

        def assemble(decoded: torch.Tensor) -> torch.Tensor:
            """The edits (count, per_face, 1, H, W) in [-1, 1] that decoded rows make."""
            edited = decoded[target_rows].reshape(count, per_face, *x0.shape[1:])
            if not settings.keep_detail:
                return edited
            reference = decoded[picks].reshape(count, per_face, *x0.shape[1:])
            if settings.localise or settings.normalise:
                change = edited - reference
                if settings.normalise:
                    change = change * contrast[:, None]
                if settings.localise:
                    change = change * change_mask(change.flatten(0, 1), settings.localise).view_as(change)
                edited = x0[:, None] + change
            else:  # summed in this order since before --localise: edits without either stay bit-identical
                edited = x0[:, None] + edited - reference
            return edited.clamp(-1, 1)

        harder = None
        if settings.push_threshold:
            wanted = torch.tensor(targets, device=self.device).repeat(count)
            rows_of_edits = torch.tensor(target_rows, device=self.device)
            # a reference decode stays as it started: it is every target's zero (and the edit to the face's own emotion)
            references = torch.tensor(picks if settings.keep_detail else [], dtype=torch.long, device=self.device)
            if shown is not None:
                reach = torch.as_tensor(shown.reach, dtype=x0.dtype, device=self.device)[:, None]
                backdrop = to_tensor(shown.backdrop).to(self.device)

            def weak(estimate: torch.Tensor, unread: torch.Tensor) -> torch.Tensor:
                rows = torch.zeros(len(estimate), dtype=torch.bool, device=self.device)
                unread = unread.clone()
                unread[references] = False
                asked = unread[rows_of_edits]  # an edit already pushed stays pushed: not read again
                if asked.any():
                    edits = assemble(estimate)
                    if shown is not None:
                        edits = backdrop[:, None] + (edits - x0[:, None]) * reach[:, None]
                    edits = edits.flatten(0, 1)[asked]
                    reads = self.classifier.predict_proba(edits).gather(1, wanted[asked, None])[:, 0]
                    rows[rows_of_edits[asked]] = reads < settings.push_threshold
                return rows

            # a factor scales what guidance adds to the conditional prediction: guidance 1 (none) stays 1
            harder = Harder(1 + settings.push_high * (guidance - 1), push * settings.push_high, weak, settings.push_same_step)
            guidance, push = 1 + settings.push_low * (guidance - 1), push * settings.push_low
        decoded = self._denoise(scheduler, gather(start), timesteps, labels, gather(codes), guidance, generator, push, negatives, held, harder)
        edits = assemble(decoded)
        if settings.max_change:  # on the finished edits: the push reads them as they decode, uncapped
            edits = within_budget(x0, edits, settings.max_change)
        return to_uint8(edits.flatten(0, 1)).reshape(count, per_face, *faces.shape[1:])

    # ------------------------------------------------------------------ the diffusion steps

    def _scheduler(self, clip_x0: bool):
        """A fresh scheduler for one call, from the template's config with x0 clipping on or off."""
        kind = type(self.scheduler)
        return kind.from_config(self.scheduler.config, **{_clip_key(kind): clip_x0})

    def _codes(self, x0: torch.Tensor) -> torch.Tensor | None:
        if not self.denoiser.uses_code:
            return None
        return self.encoder.encode(x0).float()

    def _timesteps(self, scheduler, steps: int, strength: float) -> torch.Tensor:
        """The last ``strength`` fraction of the scheduler's ``steps`` timesteps (all for strength 1)."""
        scheduler.set_timesteps(steps, device=self.device)
        keep = max(1, round(strength * len(scheduler.timesteps)))
        begin = len(scheduler.timesteps) - keep
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        return scheduler.timesteps[begin:]

    def _per_emotion(self, name: str, asked: float | None, labels: torch.Tensor) -> float | torch.Tensor:
        """The scale asked for, else each decode's own: its emotion's in the model's ``edit_defaults``
        as a (N, 1, 1, 1) tensor, or one float when every decode's is the same."""
        if asked is not None:
            return asked
        scales = [self._own(name, label) for label in labels.tolist()]
        if len(set(scales)) == 1:
            return scales[0]
        return torch.tensor(scales, device=self.device).view(-1, 1, 1, 1)

    def _negatives(self, asked: str | None, labels: list[int]) -> list[str]:
        """What each decode's guidance pushes away from (NEGATIVES): the one asked for, else its
        emotion's in the model's ``edit_defaults``."""
        return [asked or self._own("negative", label) for label in labels]

    def _own(self, name: str, label: int):
        """The model's own ``name`` setting for edits to ``label`` (``edit_defaults``), else PER_EMOTION_SETTINGS'."""
        return self.edit_defaults.get(name, {}).get(EMOTIONS[label], PER_EMOTION_SETTINGS[name])

    def _eps(self, x, t, labels, codes, guidance: float | torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Noise prediction with classifier-free guidance on the label (the code is kept in both halves);
        ``guidance`` is one scale or one per row; ``negatives``: the labels it pushes away from, one
        per row (default: the null label)."""
        guided = torch.is_tensor(guidance) or guidance != 1.0
        return self._guided(*self._predictions(x, t, labels, codes, negatives, guided), guidance)

    def _predictions(self, x, t, labels, codes, negatives: torch.Tensor | None, guided: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The conditional prediction and, if ``guided``, the negatives' (as ``_eps``), in one batch."""
        timestep = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
        if not guided:
            return self._predict(x, timestep, labels, codes), None
        doubled = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
        if negatives is None:
            negatives = torch.full_like(labels, NULL_LABEL)
        both = self._predict(doubled(x), doubled(timestep), torch.cat([labels, negatives]), doubled(codes))
        return both.chunk(2)

    @staticmethod
    def _guided(conditional: torch.Tensor, negative: torch.Tensor | None, guidance: float | torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance: ``negative`` None means unguided (guidance 1)."""
        return conditional if negative is None else negative + guidance * (conditional - negative)

    def _predict(self, x, timestep, labels, codes) -> torch.Tensor:
        """The denoiser over ``x`` in pieces (``devices.batch_piece``)."""
        size = batch_piece(self.device, len(x))
        pieces = []
        with autocast(self.device, self.bf16):
            for i in range(0, len(x), size):
                piece_codes = None if codes is None else codes[i : i + size]
                pieces.append(self.denoiser(x[i : i + size], timestep[i : i + size], labels[i : i + size], piece_codes).float())
        return torch.cat(pieces)

    def _denoise(self, scheduler, x, timesteps, labels, codes, guidance, generator, classifier_guidance: float | torch.Tensor = 0.0, negatives=None, held=None, harder: Harder | None = None) -> torch.Tensor:
        """``guidance`` and ``classifier_guidance``: one scale, or one per row; ``negatives``: as ``_eps``.
        ``held``: (each pixel's strength, (1, 1, H, W); x at every timestep of an inversion, one per
        row): a pixel keeps to that path until the decode reaches its own strength, and is decoded from
        there (differential diffusion): where the strength is lower the decode starts later.
        ``harder``: after each step but the last, the rows its ``weak`` names go on with its scales
        (with ``same_step``, at each step, from that step on: the guided prediction is a sum of the
        model passes already made, so the step is taken again at the new scales for a sum)."""
        guide = self.guide if torch.is_tensor(classifier_guidance) or classifier_guidance > 0 else None  # loaded and checked once per call
        guided = torch.is_tensor(guidance) or guidance != 1.0  # a factor on guidance 1 leaves it 1 (edit_faces)
        if harder is not None:
            gentle, pushed = (guidance, classifier_guidance), torch.zeros(len(x), 1, 1, 1, dtype=torch.bool, device=x.device)
        for i, t in enumerate(timesteps):
            conditional, negative = self._predictions(x, t, labels, codes, negatives, guided)
            gradient = None
            if guide is not None and t < guide.config.max_timestep:
                sigma, gradient = (1 - scheduler.alphas_cumprod[int(t)]).sqrt().item(), self._guide_gradient(guide, x, t, labels)

            def eps_at(guidance, classifier_guidance):
                eps = self._guided(conditional, negative, guidance)
                if gradient is None:
                    return eps
                return eps - classifier_guidance * sigma * gradient  # eps - s·sqrt(1 - ᾱ_t)·∇ log p(label | x_t): Dhariwal & Nichol's eq. 14

            eps = eps_at(guidance, classifier_guidance)
            if harder is not None and (harder.same_step or i + 1 < len(timesteps)):
                alpha = scheduler.alphas_cumprod[int(t)].to(x.device)
                estimate = ((x - (1 - alpha).sqrt() * eps) / alpha.sqrt()).clamp(-1, 1)  # x0 as this step sees it
                newly = harder.weak(estimate, ~pushed.flatten()).view_as(pushed)
                pushed = pushed | newly
                guidance, classifier_guidance = (torch.where(pushed, torch.as_tensor(hard, device=x.device), torch.as_tensor(soft, device=x.device))
                                                 for hard, soft in zip((harder.guidance, harder.classifier_guidance), gentle))  # fmt: skip
                if harder.same_step and newly.any():
                    eps = eps_at(guidance, classifier_guidance)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
            if held is not None and i + 1 < len(timesteps):
                strengths, path = held
                x = torch.where(strengths * scheduler.config.num_train_timesteps > t, x, path[i + 1])  # stepped from within its strength
        return x.clamp(-1, 1)

    def _guide_gradient(self, guide, x, t, labels) -> torch.Tensor:
        """∇ₓ log p(label | x_t = x, t) under the guiding classifier, one row per decode."""
        with torch.inference_mode(False), torch.enable_grad():  # edits run under inference mode: leave it here
            x, labels = x.detach().clone().requires_grad_(True), labels.clone()
            timestep = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
            with autocast(self.device, self.bf16):
                logits = guide.logits(x, timestep)
            chosen = logits.float().log_softmax(-1).gather(1, labels[:, None]).sum()
            return torch.autograd.grad(chosen, x)[0].detach()

    def _invert(self, scheduler, x0, timesteps, labels, codes) -> list[torch.Tensor]:
        """Deterministic DDIM inversion along exactly the timesteps the decoder will visit, reversed:
        x at each of ``timesteps``, in their order (the first is where the decode starts).

        Written out (rather than DDIMInverseScheduler) because the path must mirror whichever
        scheduler decodes, truncated at the edit strength.
        """
        alphas = scheduler.alphas_cumprod.to(x0.device)
        x, alpha_prev, path = x0, torch.tensor(1.0, device=x0.device), []
        for t in timesteps.flip(0):
            eps = self._eps(x, t, labels, codes, guidance=1.0)
            alpha = alphas[int(t)]
            clean = (x - (1 - alpha_prev).sqrt() * eps) / alpha_prev.sqrt()
            x, alpha_prev = alpha.sqrt() * clean + (1 - alpha).sqrt() * eps, alpha
            path.append(x)
        return path[::-1]


def load_editor(directory: str | Path | None = None, *, scheduler: str | None = None, device: str = "auto") -> FaceEditor:
    """The editor a model directory holds: a GAN (``generator/``) or a diffusion model (``denoiser/``,
    default: the shipped one); ``scheduler`` applies to diffusion models only."""
    if directory is not None and (Path(directory) / "generator" / "config.json").is_file():
        from .gan import GanEditor

        return GanEditor.from_pretrained(directory, device=device)
    return EmotionEditPipeline.from_pretrained(directory, scheduler=scheduler, device=device)
