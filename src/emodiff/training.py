"""Training loops, nanoGPT-style: one readable loop per model family over shared bookkeeping.

Everything a run needs to continue lives in ``OUT/checkpoint.safetensors`` (weights, optimizer
moments, schedule, step) plus ``OUT/metrics.csv``. Randomness is derived from (seed, step), never
carried, so a resumed run draws exactly the batches and noise the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import platform
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .data import FaceSet, augment, load_fer2013, to_tensor
from .encoders import ENCODER_CLASSES, FaceVAE, load_encoder
from .files import atomic_write, save_image, save_model_dir
from .pipeline import CPU_CHUNK, bf16_supported

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.csv"
TRAINING_CONFIG = "training_config.json"


# ----------------------------------------------------------------------------- devices


def make_accelerator(device: str = "auto", out: Path | None = None) -> Accelerator:
    """An Accelerator on the asked device, bf16 autocast where the hardware has it (AMX, Ampere+)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    target = torch.device("cpu" if use_cpu else "cuda")
    tensorboard = out is not None and importlib.util.find_spec("tensorboard") is not None
    return Accelerator(
        cpu=use_cpu,
        mixed_precision="bf16" if bf16_supported(target) else "no",
        project_dir=str(out) if out else None,
        log_with="tensorboard" if tensorboard else None,
    )


def describe_hardware(accelerator: Accelerator) -> str:
    """Where a run ran, for the records kept next to its weights."""
    if accelerator.device.type == "cuda":
        where = torch.cuda.get_device_name(accelerator.device)
    else:
        where = f"{os.cpu_count()}-core CPU ({platform.machine()}), {torch.get_num_threads()} threads"
    return f"{accelerator.num_processes} x {where}, mixed precision {accelerator.mixed_precision}, torch {torch.__version__}"


def announce(accelerator: Accelerator, what: str, faces: int) -> None:
    """One line saying what runs where, so a log shows the hardware and precision of every run."""
    if accelerator.is_main_process:
        processes = accelerator.num_processes
        print(
            f"{what}: {faces} training faces, {processes} process{'es' if processes > 1 else ''} "
            f"({accelerator.distributed_type.value}) on {accelerator.device}, mixed precision {accelerator.mixed_precision}",
            flush=True,
        )


def interrupt_on_sigterm():
    """Turn SIGTERM (kill, cluster pre-emption) into KeyboardInterrupt so the loop checkpoints
    before exiting; returns the function that puts the previous handler back."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of one training step on one process: resumable without storing RNG state."""
    return (seed * 1_000_003 + step * 9_176 + rank * 7_919) % (2**63)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 10_007 + epoch))


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer, scheduler, state: dict) -> None:
    """Weights, optimizer tensors and JSON state in one safetensors file: nothing to unpickle."""
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    optimizer_state = optimizer.state_dict()
    for param_id, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "state": json.dumps(state),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict()),
    }
    atomic_write(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer, scheduler) -> dict:
    """Restore what ``save_checkpoint`` wrote into live objects; returns the JSON state."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, slot = key.split(".", 2)
            slots.setdefault(int(param_id), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads(metadata["param_groups"])})
    scheduler.load_state_dict(json.loads(metadata["scheduler"]))
    return json.loads(metadata["state"])


class MetricsLog:
    """Rows of metrics, rewritten atomically to CSV (and sent to TensorBoard when installed)."""

    def __init__(self, path: Path, accelerator: Accelerator):
        self.path, self.accelerator = path, accelerator
        self.rows: list[dict] = []
        if path.exists():
            with open(path, newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def drop_after(self, step: int) -> None:
        """Forget rows a killed run logged after its last checkpoint; the resumed run redoes them."""
        self.rows = [row for row in self.rows if int(float(row["step"])) <= step]

    def log(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.accelerator.is_main_process:
            fields = list(dict.fromkeys(key for r in self.rows for key in r))

            def write(temp: Path) -> None:
                with open(temp, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fields)
                    writer.writeheader()
                    writer.writerows(self.rows)

            atomic_write(self.path, write)
        self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=int(row["step"]))


def prepare_out_dir(out: Path, resume: bool) -> bool:
    """True when there is a checkpoint to resume; refuses to silently overwrite a previous run."""
    has_checkpoint = (out / CHECKPOINT).exists()
    if has_checkpoint and not resume:
        raise FileExistsError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    return has_checkpoint and resume


def start_trackers(accelerator: Accelerator, name: str, config: dict) -> None:
    """TensorBoard logs under OUT/<name> when tensorboard is installed; the CSV is always written."""
    if accelerator.log_with:
        flat = {k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) or v is None else v) for k, v in config.items()}
        accelerator.init_trackers(name, config=flat)


# ----------------------------------------------------------------------------- encoders


CLASSIFIER_AUGMENT = dict(flip=True, max_shift=0.1, max_rotate_deg=10.0, max_scale=0.1)


@dataclass
class EncoderRecipe:
    epochs: int
    lr: float
    weight_decay: float
    augment: dict = field(default_factory=dict)


ENCODER_RECIPES = {
    "cnn": EncoderRecipe(epochs=30, lr=2e-3, weight_decay=0.05, augment=CLASSIFIER_AUGMENT),
    "judge": EncoderRecipe(epochs=30, lr=2e-3, weight_decay=0.05, augment=CLASSIFIER_AUGMENT),
    "vae": EncoderRecipe(epochs=20, lr=1e-3, weight_decay=0.0, augment=dict(flip=True)),
}


@dataclass
class EncoderTrainConfig:
    kind: str  # cnn | vae | judge
    data: str
    out: str
    epochs: int | None = None  # None: the kind's recipe
    batch_size: int = 128
    lr: float | None = None
    init: str | None = None  # trained model dir of the same kind to fine-tune from
    device: str = "auto"
    seed: int = 0
    checkpoint_minutes: float = 5.0
    skip_bad: bool = False
    resume: bool = False
    stop_at_step: int | None = None  # end this invocation early; the run stays resumable


class _Objective(nn.Module):
    """Wraps ``model.training_loss`` as ``forward`` so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, labels):
        return self.model.training_loss(images, labels)


@torch.no_grad()
def evaluate_encoder(model: nn.Module, faces: FaceSet, accelerator: Accelerator) -> dict:
    """Validation metrics averaged over ``faces`` (weighted by batch size)."""
    batch_size = CPU_CHUNK if accelerator.device.type == "cpu" else 512  # big batches are slow on a CPU
    model.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(faces), batch_size):
        images = to_tensor(faces.images[start : start + batch_size]).to(accelerator.device)
        labels = torch.from_numpy(faces.labels[start : start + batch_size]).to(accelerator.device)
        with accelerator.autocast():
            metrics = model.validation_metrics(images, labels)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value * len(labels)
    model.train()
    return {key: value / len(faces) for key, value in totals.items()}


def write_reconstructions(vae: FaceVAE, faces: FaceSet, path: Path, count: int = 16) -> None:
    """Inputs (top row) over their VAE reconstructions (bottom row), as one PNG."""
    from PIL import Image

    from .data import to_uint8

    images = to_tensor(faces.images[:count])
    was_training = vae.training
    with torch.no_grad():
        recon = vae.eval()(images.to(vae.device)).clamp(-1, 1).cpu()
    vae.train(was_training)
    rows = [np.concatenate(list(to_uint8(batch)), axis=1) for batch in (images, recon)]
    save_image(Image.fromarray(np.concatenate(rows, axis=0)), path)


def train_encoder(config: EncoderTrainConfig) -> dict:
    """Train a CNN encoder, VAE or judge on Training; validate on PublicTest every epoch."""
    if config.kind not in ENCODER_CLASSES:
        raise ValueError(f"unknown encoder kind {config.kind!r}: expected one of {', '.join(ENCODER_CLASSES)}")
    recipe = ENCODER_RECIPES[config.kind]
    epochs = config.epochs or recipe.epochs
    start = load_encoder(config.init) if config.init and not config.resume else None
    if start is not None and type(start) is not ENCODER_CLASSES[config.kind]:
        expected = ENCODER_CLASSES[config.kind].__name__
        raise ValueError(f"--init {config.init}: a {type(start).__name__}, but {config.kind} is a {expected}")
    out = Path(config.out)
    resuming = prepare_out_dir(out, config.resume)
    accelerator = make_accelerator(config.device, out)

    faces = load_fer2013(config.data, skip_bad=config.skip_bad)
    train, val = faces.split("Training"), faces.split("PublicTest")
    if len(train) == 0:
        raise ValueError(f"{config.data}: no Training rows to train on")
    if len(val) == 0:
        val = train.take(np.arange(min(len(train), 512)))  # no PublicTest rows: validate on a training slice

    torch.manual_seed(config.seed)
    model = ENCODER_CLASSES[config.kind]()
    if start is not None:
        model.load_state_dict(start.state_dict())
    announce(accelerator, f"train-encoder {config.kind}", len(train))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr or recipe.lr, weight_decay=recipe.weight_decay)
    global_batch = min(config.batch_size, len(train))
    steps_per_epoch = len(train) // global_batch
    total_steps = epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(500, total_steps // 20), total_steps)
    metrics = MetricsLog(out / METRICS, accelerator)
    step, minutes_before = 0, 0.0
    if resuming:
        state = load_checkpoint(out / CHECKPOINT, {"model": model}, optimizer, scheduler)
        step, minutes_before = state["step"], state.get("minutes", 0.0)
        metrics.drop_after(step)
    start_trackers(accelerator, f"train-encoder-{config.kind}", asdict(config))
    objective, optimizer = accelerator.prepare(_Objective(model), optimizer)

    def checkpoint() -> None:
        if accelerator.is_main_process:
            state = {"step": step, "minutes": minutes(), "config": asdict(config)}
            save_checkpoint(out / CHECKPOINT, {"model": model}, optimizer, scheduler, state)

    images, labels = to_tensor(train.images), torch.from_numpy(train.labels)
    rank, world = accelerator.process_index, accelerator.num_processes
    last_checkpoint, started = time.monotonic(), time.monotonic()
    minutes = lambda: minutes_before + (time.monotonic() - started) / 60  # noqa: E731
    stop = min(total_steps, config.stop_at_step or total_steps)
    bar = tqdm(total=total_steps, initial=step, desc=f"train {config.kind}", disable=not accelerator.is_main_process)
    epoch_stats: dict[str, list[float]] = {}
    model.train()
    restore_sigterm = interrupt_on_sigterm()
    try:
        while step < stop:
            epoch, offset = divmod(step, steps_per_epoch)
            index = epoch_order(len(train), config.seed, epoch)[offset * global_batch : (offset + 1) * global_batch]
            index = index[rank::world]
            generator = torch.Generator().manual_seed(step_seed(config.seed, step, rank))
            torch.manual_seed(step_seed(config.seed, step, rank))  # dropout, VAE sampling
            batch = augment(images[index], generator, **recipe.augment).to(accelerator.device)
            with accelerator.autocast():
                loss, stats = objective(batch, labels[index].to(accelerator.device))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            step += 1
            for key, value in {"loss": loss.item(), **stats}.items():
                epoch_stats.setdefault(key, []).append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch + 1)
            if step % steps_per_epoch == 0:
                row = {"epoch": step // steps_per_epoch, "step": step, "images_seen": step * global_batch}
                row.update({f"train_{k}": float(np.mean(v)) for k, v in epoch_stats.items()})
                row.update({f"val_{k}": v for k, v in evaluate_encoder(model, val, accelerator).items()})
                row["minutes"] = minutes()
                metrics.log(row)
                epoch_stats = {}
                bar.write(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                if accelerator.is_main_process:
                    save_model_dir(model, out)
                    if isinstance(model, FaceVAE):
                        write_reconstructions(model, val, out / "reconstructions.png")
                checkpoint()
                last_checkpoint = time.monotonic()
            elif time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60:
                checkpoint()
                last_checkpoint = time.monotonic()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        restore_sigterm()
        bar.close()
    checkpoint()
    accelerator.end_training()
    last_epoch = metrics.rows[-1] if metrics.rows else {}
    return {**last_epoch, "step": step, "total_steps": total_steps, "is_main": accelerator.is_main_process}


# ----------------------------------------------------------------------------- diffusion


@dataclass
class DiffusionTrainConfig:
    cond: str  # label | cnn | vae
    data: str
    out: str
    encoder: str | None = None  # semantic encoder dir (default: the shipped one of kind `cond`)
    images: int | None = None  # budget in training images seen (default 600k when no minutes)
    minutes: float | None = None  # or a wall-clock budget, summed over resumes
    batch_size: int = 64
    lr: float = 3e-4
    warmup_images: int = 20_000
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # each of label and code, independently
    min_snr_gamma: float | None = None
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 2
    attention_levels: tuple[bool, ...] = (False, False, False)
    seed: int = 0
    device: str = "auto"
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    skip_bad: bool = False
    resume: bool = False
    stop_at_step: int | None = None


@torch.no_grad()
def encode_all(encoder: nn.Module, images: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """Semantic codes of a whole image set, once: the encoder is frozen during diffusion training."""
    encoder = encoder.to(device).eval()
    chunks = [
        encoder.encode(images[i : i + batch_size].to(device)).float().cpu()
        for i in tqdm(range(0, len(images), batch_size), desc="semantic codes", leave=False)
    ]
    return torch.cat(chunks)


def load_semantic_encoder(cond: str, directory: str | None) -> nn.Module:
    encoder = load_encoder(directory or cond)
    expected = ENCODER_CLASSES[cond]
    if not isinstance(encoder, expected):
        raise ValueError(f"--encoder {directory}: a {type(encoder).__name__}, but --cond {cond} needs a {expected.__name__}")
    return encoder


def write_sample_grid(pipeline, path: Path, per_emotion: int = 6, seed: int = 0) -> None:
    from .data import EMOTIONS
    from .grid import labelled_grid

    rows = [np.stack([np.asarray(im) for im in pipeline.sample(e, per_emotion, steps=25, seed=seed)]) for e in EMOTIONS]
    grid = labelled_grid(np.stack(rows), row_labels=list(EMOTIONS))
    save_image(grid, path)


def train_diffusion(config: DiffusionTrainConfig) -> dict:
    """Train the conditional DDPM (MSE on the noise) with EMA weights; the model dir is usable after every checkpoint."""
    from diffusers.optimization import get_constant_schedule_with_warmup
    from diffusers.training_utils import EMAModel, compute_snr

    from .denoiser import CONDITIONS, NULL_LABEL, EmotionDenoiser
    from .pipeline import EmotionEditPipeline, sampling_scheduler, training_scheduler

    if config.cond not in CONDITIONS:
        raise ValueError(f"unknown --cond {config.cond!r}: expected one of {', '.join(CONDITIONS)}")
    budget_images = config.images if config.images or config.minutes else 600_000
    out = Path(config.out)
    resuming = prepare_out_dir(out, config.resume)
    accelerator = make_accelerator(config.device, out)
    device = accelerator.device

    train = load_fer2013(config.data, skip_bad=config.skip_bad).split("Training")
    if len(train) == 0:
        raise ValueError(f"{config.data}: no Training rows to train on")
    announce(accelerator, f"train {config.cond}", len(train))
    images, labels = to_tensor(train.images), torch.from_numpy(train.labels)
    encoder = None if config.cond == "label" else load_semantic_encoder(config.cond, config.encoder)
    if encoder is not None:
        codes, codes_flipped = encode_all(encoder, images, device), encode_all(encoder, images.flip(-1), device)

    torch.manual_seed(config.seed)
    denoiser = EmotionDenoiser(
        cond=config.cond,
        code_dim=0 if encoder is None else codes.shape[1],
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        attention_levels=tuple(config.attention_levels),
    )
    ema_denoiser = EmotionDenoiser.from_config(denoiser.config)
    noise_scheduler = training_scheduler()
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    global_batch = min(config.batch_size, len(train))
    scheduler = get_constant_schedule_with_warmup(optimizer, max(1, config.warmup_images // global_batch))
    steps_per_epoch = len(train) // global_batch
    total_steps = budget_images // global_batch if budget_images else None
    metrics = MetricsLog(out / METRICS, accelerator)
    state = {"step": 0, "minutes": 0.0, "ema_step": 0}
    if resuming:
        state = load_checkpoint(out / CHECKPOINT, {"model": denoiser, "ema": ema_denoiser}, optimizer, scheduler)
        metrics.drop_after(state["step"])
    else:
        ema_denoiser.load_state_dict(denoiser.state_dict())
    ema_denoiser.to(device)
    ema = EMAModel(ema_denoiser.parameters(), decay=config.ema_decay)
    ema.optimization_step = state["ema_step"]
    step, minutes_before = state["step"], state["minutes"]
    start_trackers(accelerator, f"train-{config.cond}", asdict(config))
    model, optimizer = accelerator.prepare(denoiser, optimizer)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)

    def save() -> None:
        if window:
            log_window()
        ema.copy_to(ema_denoiser.parameters())
        if not accelerator.is_main_process:
            return
        state.update(step=step, minutes=minutes(), ema_step=ema.optimization_step, config=asdict(config))
        save_checkpoint(out / CHECKPOINT, {"model": denoiser, "ema": ema_denoiser}, optimizer, scheduler, state)
        pipeline = EmotionEditPipeline(ema_denoiser, sampling_scheduler("ddim", noise_scheduler), encoder)
        pipeline.to(device).save_pretrained(out)
        record = {**asdict(config), "hardware": describe_hardware(accelerator)}
        atomic_write(out / TRAINING_CONFIG, lambda t: t.write_text(json.dumps(record, indent=2)))
        write_sample_grid(pipeline, out / "samples" / f"images_{step * global_batch:09d}.png", seed=config.seed)

    def log_window() -> None:
        row = {"step": step, "images_seen": step * global_batch, "loss": float(np.mean(window))}
        metrics.log({**row, "lr": scheduler.get_last_lr()[0], "minutes": minutes()})
        window.clear()

    started = time.monotonic()
    minutes = lambda: minutes_before + (time.monotonic() - started) / 60  # noqa: E731
    limits = [s for s in (total_steps, config.stop_at_step) if s]
    stop = min(limits) if limits else None  # None: only the minutes budget ends the run
    rank, world = accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=total_steps, initial=step, desc=f"train {config.cond}", disable=not accelerator.is_main_process)
    last_checkpoint, window = time.monotonic(), []
    model.train()
    restore_sigterm = interrupt_on_sigterm()
    try:
        while (stop is None or step < stop) and (config.minutes is None or minutes() < config.minutes):
            epoch, offset = divmod(step, steps_per_epoch)
            index = epoch_order(len(train), config.seed, epoch)[offset * global_batch : (offset + 1) * global_batch]
            index = index[rank::world]
            g = torch.Generator().manual_seed(step_seed(config.seed, step, rank))
            flip = torch.rand(len(index), generator=g) < 0.5
            x0 = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index])
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            label = torch.where(torch.rand(len(index), generator=g) < config.cond_dropout, NULL_LABEL, labels[index])
            drop_code = torch.rand(len(index), generator=g) < config.cond_dropout
            code = None if encoder is None else torch.where(flip[:, None], codes_flipped[index], codes[index]).to(device)
            x0, t, noise, label, drop_code = (v.to(device) for v in (x0, t, noise, label, drop_code))
            noisy = noise_scheduler.add_noise(x0, noise, t)
            with accelerator.autocast():
                predicted = model(noisy, t, label, code, drop_code)
            per_sample = (predicted.float() - noise).pow(2).flatten(1).mean(1)
            if config.min_snr_gamma:
                snr = compute_snr(noise_scheduler, t)
                per_sample = per_sample * snr.clamp(max=config.min_snr_gamma) / snr
            loss = per_sample.mean()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            ema.step(denoiser.parameters())
            step += 1
            window.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % config.log_every == 0:
                log_window()
            if time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60:
                save()
                last_checkpoint = time.monotonic()
    except KeyboardInterrupt:
        save()
        raise
    finally:
        restore_sigterm()
        bar.close()
    save()
    accelerator.end_training()
    return {"step": step, "images_seen": step * global_batch, "minutes": minutes(), "is_main": accelerator.is_main_process}
