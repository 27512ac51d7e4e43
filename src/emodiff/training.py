"""Training loops, nanoGPT-style: one loop per model family, each reading top to bottom; the
bookkeeping they share (folder, checkpoints, metrics, signals, batch order) is ``runs.Run``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from torch import nn
from tqdm.auto import tqdm

from .data import FaceSet, augment, draw_fingers, load_fer2013, to_tensor, to_uint8
from .devices import batch_piece, describe_hardware
from .encoders import ENCODER_CLASSES, FaceVAE, load_encoder
from .files import save_image, save_model_dir
from .labels import EMOTIONS
from .runs import Run, with_recorded_recipe


def training_faces(data: str, skip_bad: bool, leave_out: str | None = None) -> tuple[FaceSet, FaceSet]:
    """(Training, PublicTest) of a FER-2013 file, without the Training faces the ``leave_out`` file
    lists (``emodiff find-hands``); an error when there is nothing to train on."""
    faces = load_fer2013(data, skip_bad=skip_bad)
    train = faces.split("Training")
    if len(train) == 0:
        raise ValueError(f"{data}: no Training rows to train on")
    if leave_out:
        from .hands import read_leave_out

        train = train.take(np.setdiff1d(np.arange(len(train)), read_leave_out(leave_out, len(train))))
    return train, faces.split("PublicTest")


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
    # the second judge's recipe differs on purpose (see TransformerJudge): wider augmentation, fewer epochs
    "judge2": EncoderRecipe(epochs=20, lr=1e-3, weight_decay=0.05, augment=dict(flip=True, max_shift=0.12, max_rotate_deg=15.0, max_scale=0.15)),
    "vae": EncoderRecipe(epochs=20, lr=1e-3, weight_decay=0.0, augment=dict(flip=True)),
    "guide": EncoderRecipe(epochs=15, lr=2e-3, weight_decay=0.05, augment=CLASSIFIER_AUGMENT),
}


@dataclass
class EncoderTrainConfig:
    kind: str  # cnn | vae | judge | judge2
    data: str
    out: str
    epochs: int | None = None  # None: the kind's recipe
    batch_size: int = 128
    lr: float | None = None
    init: str | None = None  # trained model dir of the same kind to fine-tune from
    adversarial_radius: float | None = None  # guide only: L2 radius of adversarial training (None: 0, or --init's)
    balance_classes: bool = False  # draw every emotion equally often, as DiffusionTrainConfig's
    fingers: float = 0.0  # the fraction of training faces with finger-like bars drawn over them (data.draw_fingers)
    device: str = "auto"
    seed: int = 0
    checkpoint_minutes: float = 5.0
    skip_bad: bool = False
    leave_out: str | None = None  # a file of Training positions to train without (emodiff find-hands)
    resume: bool = False
    stop_at_step: int | None = None  # end this invocation early; the run stays resumable


class _Objective(nn.Module):
    """Wraps ``model.training_loss`` as ``forward`` so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, labels):
        return self.model.training_loss(images, labels)


def encoder_options(config: EncoderTrainConfig, start: nn.Module | None) -> dict:
    """Model options the command line sets: only ``adversarial_radius``, and only for the guide; with
    ``--init`` and no radius given, the starting model's own."""
    if config.adversarial_radius is None:
        return {"adversarial_radius": start.config.adversarial_radius} if start is not None and config.kind == "guide" else {}
    if config.kind != "guide":
        raise ValueError(f"--adversarial-radius {config.adversarial_radius}: only the guide trains adversarially, not {config.kind}")
    if config.adversarial_radius < 0:
        raise ValueError(f"--adversarial-radius {config.adversarial_radius}: expected a radius >= 0 (0: plain training)")
    return {"adversarial_radius": config.adversarial_radius}


@torch.no_grad()
def evaluate_encoder(model: nn.Module, faces: FaceSet, device: torch.device, autocast, metrics=None) -> dict:
    """Validation metrics averaged over ``faces`` (weighted by batch size); ``metrics(images, labels)``
    defaults to the model's own ``validation_metrics``."""
    metrics = metrics or model.validation_metrics
    size = batch_piece(device, 512)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(faces), size):
        images = to_tensor(faces.images[start : start + size]).to(device)
        labels = torch.from_numpy(faces.labels[start : start + size]).to(device)
        with autocast():
            measured = metrics(images, labels)
        for key, value in measured.items():
            totals[key] = totals.get(key, 0.0) + value * len(labels)
    model.train(was_training)
    return {key: value / len(faces) for key, value in totals.items()}


def write_reconstructions(vae: FaceVAE, faces: FaceSet, path: Path, count: int = 16) -> None:
    """Inputs (top row) over their VAE reconstructions (bottom row), as one PNG."""
    from PIL import Image

    images = to_tensor(faces.images[:count])
    was_training = vae.training
    with torch.no_grad():
        recon = vae.eval()(images.to(vae.device)).clamp(-1, 1).cpu()
    vae.train(was_training)
    rows = [np.concatenate(list(to_uint8(batch)), axis=1) for batch in (images, recon)]
    save_image(Image.fromarray(np.concatenate(rows, axis=0)), path)


def train_encoder(config: EncoderTrainConfig) -> dict:
    """Train a CNN encoder, VAE or judge on Training; validate on PublicTest every epoch."""
    config = with_recorded_recipe(config)
    if config.kind not in ENCODER_CLASSES:
        raise ValueError(f"unknown encoder kind {config.kind!r}: expected one of {', '.join(ENCODER_CLASSES)}")
    recipe = ENCODER_RECIPES[config.kind]
    start = load_encoder(config.init) if config.init and not config.resume else None
    if start is not None and type(start) is not ENCODER_CLASSES[config.kind]:
        expected = ENCODER_CLASSES[config.kind].__name__
        raise ValueError(f"--init {config.init}: a {type(start).__name__}, but {config.kind} is a {expected}")
    options = encoder_options(config, start)
    config = replace(config, **options)  # the radius a resumed run must keep, even one taken from --init
    train, val = training_faces(config.data, config.skip_bad, config.leave_out)
    run = Run(config.out, resume=config.resume, device=config.device, seed=config.seed, checkpoint_minutes=config.checkpoint_minutes)
    accelerator = run.accelerator
    if len(val) == 0:
        val = train.take(np.arange(min(len(train), 512)))  # no PublicTest rows: validate on a training slice

    torch.manual_seed(config.seed)
    model = ENCODER_CLASSES[config.kind](**options)
    if start is not None:
        model.load_state_dict(start.state_dict())
    run.announce(f"train-encoder {config.kind}", len(train))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr or recipe.lr, weight_decay=recipe.weight_decay)
    batch_size = min(config.batch_size, len(train))
    steps_per_epoch = len(train) // batch_size
    total_steps = (config.epochs or recipe.epochs) * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(500, total_steps // 20), total_steps)
    step = run.restore({"model": model}, optimizer, scheduler)["step"] if run.resuming else 0
    run.start_trackers(f"train-encoder-{config.kind}", asdict(config))
    objective, optimizer = accelerator.prepare(_Objective(model), optimizer)

    def save() -> None:
        run.save({"model": model}, optimizer, scheduler, {"step": step, "config": asdict(config)})

    images, labels = to_tensor(train.images), torch.from_numpy(train.labels)
    stop = min(total_steps, config.stop_at_step or total_steps)
    bar = tqdm(total=total_steps, initial=step, desc=f"train {config.kind}", disable=not run.is_main)
    epoch_stats: dict[str, list[float]] = {}
    model.train()
    with run.checkpoint_on_interrupt(save):
        while step < stop:
            index = run.balanced_batch(step, labels, batch_size) if config.balance_classes else run.batch(step, len(train), batch_size)
            generator = run.generator(step)
            batch = augment(images[index], generator, **recipe.augment)
            if config.fingers:
                batch = draw_fingers(batch, generator, config.fingers)
            batch = batch.to(accelerator.device)
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
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=step // steps_per_epoch + 1)
            if step % steps_per_epoch == 0:  # end of an epoch: validate, keep the model, checkpoint
                row = {"epoch": step // steps_per_epoch, "step": step, "images_seen": step * batch_size}
                row.update({f"train_{k}": float(np.mean(v)) for k, v in epoch_stats.items()})
                row.update({f"val_{k}": v for k, v in evaluate_encoder(model, val, accelerator.device, accelerator.autocast).items()})
                row["minutes"] = run.minutes()
                run.metrics.log(row)
                epoch_stats = {}
                bar.write(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                if run.is_main:
                    save_model_dir(model, run.out)
                    if isinstance(model, FaceVAE):
                        write_reconstructions(model, val, run.out / "reconstructions.png")
                save()
            elif run.checkpoint_due():
                save()
    bar.close()
    save()
    accelerator.end_training()
    last_epoch = run.metrics.rows[-1] if run.metrics.rows else {}
    return {**last_epoch, "step": step, "total_steps": total_steps, "is_main": run.is_main}


# ----------------------------------------------------------------------------- diffusion


@dataclass
class DiffusionTrainConfig:
    cond: str  # label | cnn | vae
    data: str
    out: str
    encoder: str | None = None  # semantic encoder dir (default: the shipped one of kind `cond`)
    init: str | None = None  # a trained model directory to continue from (its EMA weights; fresh optimizer)
    images: int | None = None  # budget in training images seen (default 600k when no minutes)
    minutes: float | None = None  # or a wall-clock budget, summed over resumes
    batch_size: int = 64
    lr: float = 3e-4
    lr_schedule: str = "constant"  # constant after warm-up, or cosine: decays to zero at the --images budget
    warmup_images: int = 20_000
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # each of label and code, independently
    min_snr_gamma: float | None = None
    # Train only on timesteps t < max_timestep (None: all of T). Edits invert to and decode from
    # strength*T (0.2 by default), so a fine-tuning stage there spends the budget where edits are made.
    max_timestep: int | None = None
    # Draw each face by drawing its emotion uniformly first: every emotion is seen as often, whatever
    # its share of the data (disgust is 436 of the 28,709 Training faces).
    balance_classes: bool = False
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 2
    attention_levels: tuple[bool, ...] = (False, False, False)
    seed: int = 0
    device: str = "auto"
    checkpoint_minutes: float = 5.0
    sample_minutes: float = 30.0  # a sample grid at most this often (and at the end): it costs minutes on a CPU
    log_every: int = 50
    skip_bad: bool = False
    leave_out: str | None = None  # a file of Training positions to train without (emodiff find-hands)
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


def write_sample_grid(pipeline, path: Path, seed: int = 0) -> None:
    """Six random faces per emotion, one row each: how a run's samples look as it trains."""
    from .grid import labelled_grid

    rows = [np.stack([np.asarray(im) for im in pipeline.sample(e, 6, steps=25, seed=seed)]) for e in EMOTIONS]
    save_image(labelled_grid(np.stack(rows), row_labels=list(EMOTIONS)), path)


def _check_diffusion_config(config: DiffusionTrainConfig) -> int | None:
    """The budget in images (None: minutes only), after refusing what cannot run."""
    from .denoiser import CONDITIONS

    if config.cond not in CONDITIONS:
        raise ValueError(f"unknown --cond {config.cond!r}: expected one of {', '.join(CONDITIONS)}")
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown --lr-schedule {config.lr_schedule!r}: expected constant or cosine")
    if config.max_timestep is not None and not 0 < config.max_timestep <= 1000:
        raise ValueError(f"--max-timestep {config.max_timestep}: expected 1..1000 (of the 1000 training timesteps)")
    budget_images = config.images if config.images or config.minutes else 600_000
    if config.lr_schedule == "cosine" and not budget_images:
        raise ValueError("--lr-schedule cosine decays to zero at the --images budget: give --images, not --minutes")
    return budget_images


def train_diffusion(config: DiffusionTrainConfig) -> dict:
    """Train the conditional DDPM (MSE on the noise) with EMA weights; the model dir is usable after every checkpoint."""
    from diffusers.training_utils import EMAModel, compute_snr

    from .denoiser import NULL_LABEL, EmotionDenoiser
    from .pipeline import EmotionEditPipeline, sampling_scheduler, training_scheduler

    config = with_recorded_recipe(config)
    budget_images = _check_diffusion_config(config)
    start = EmotionEditPipeline.from_pretrained(config.init, device="cpu") if config.init else None
    if start is not None and start.denoiser.config.cond != config.cond:
        raise ValueError(f"--init {config.init}: a {start.denoiser.config.cond!r} model, but --cond is {config.cond!r}")
    train, _ = training_faces(config.data, config.skip_bad, config.leave_out)
    run = Run(config.out, resume=config.resume, device=config.device, seed=config.seed, checkpoint_minutes=config.checkpoint_minutes)
    accelerator, device = run.accelerator, run.accelerator.device
    run.announce(f"train {config.cond}", len(train))
    images, labels = to_tensor(train.images), torch.from_numpy(train.labels)
    if start is not None:
        encoder = start.encoder  # the semantic code the init model was trained with
    else:
        encoder = None if config.cond == "label" else load_semantic_encoder(config.cond, config.encoder)
    if encoder is not None:
        codes, codes_flipped = encode_all(encoder, images, device), encode_all(encoder, images.flip(-1), device)

    torch.manual_seed(config.seed)
    if start is not None:  # the architecture is the init model's
        denoiser = EmotionDenoiser.from_config(start.denoiser.config)
        denoiser.load_state_dict(start.denoiser.state_dict())
    else:
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
    batch_size = min(config.batch_size, len(train))
    total_steps = budget_images // batch_size if budget_images else None
    warmup_steps = max(1, config.warmup_images // batch_size)
    if config.lr_schedule == "cosine":
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    else:
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup_steps)
    state = {"step": 0, "ema_step": 0}
    if run.resuming:
        state = run.restore({"model": denoiser, "ema": ema_denoiser}, optimizer, scheduler)
    else:
        ema_denoiser.load_state_dict(denoiser.state_dict())
    ema_denoiser.to(device)
    ema = EMAModel(ema_denoiser.parameters(), decay=config.ema_decay)
    ema.optimization_step = state["ema_step"]
    step = state["step"]
    run.start_trackers(f"train-{config.cond}", asdict(config))
    model, optimizer = accelerator.prepare(denoiser, optimizer)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    window: list[float] = []
    samples_at = run.minutes()

    def log_window() -> None:
        row = {"step": step, "images_seen": step * batch_size, "loss": float(np.mean(window))}
        run.metrics.log({**row, "lr": scheduler.get_last_lr()[0], "minutes": run.minutes()})
        window.clear()

    def save(final: bool = False) -> None:
        nonlocal samples_at
        if window:
            log_window()
        ema.copy_to(ema_denoiser.parameters())
        run.save({"model": denoiser, "ema": ema_denoiser}, optimizer, scheduler, {"step": step, "ema_step": ema.optimization_step, "config": asdict(config)})
        if not run.is_main:
            return
        pipeline = EmotionEditPipeline(ema_denoiser, sampling_scheduler("ddim", noise_scheduler), encoder)
        pipeline.to(device).save_pretrained(run.out)
        run.write_record({**asdict(config), "hardware": describe_hardware(accelerator)})
        if final or run.minutes() - samples_at > config.sample_minutes:
            write_sample_grid(pipeline, run.out / "samples" / f"images_{step * batch_size:09d}.png", seed=config.seed)
            samples_at = run.minutes()

    limits = [s for s in (total_steps, config.stop_at_step) if s]
    stop = min(limits) if limits else None  # None: only the minutes budget ends the run
    bar = tqdm(total=total_steps, initial=step, desc=f"train {config.cond}", disable=not run.is_main)
    model.train()
    with run.checkpoint_on_interrupt(save):
        while (stop is None or step < stop) and (config.minutes is None or run.minutes() < config.minutes):
            index = run.balanced_batch(step, labels, batch_size) if config.balance_classes else run.batch(step, len(train), batch_size)
            g = run.generator(step)
            flip = torch.rand(len(index), generator=g) < 0.5
            x0 = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index])
            t = torch.randint(0, config.max_timestep or noise_scheduler.config.num_train_timesteps, (len(index),), generator=g)
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
            if run.checkpoint_due():
                save()
    bar.close()
    save(final=True)
    accelerator.end_training()
    return {"step": step, "images_seen": step * batch_size, "minutes": run.minutes(), "is_main": run.is_main}


# ----------------------------------------------------------------------------- GAN peer


@dataclass
class GanTrainConfig:
    data: str
    out: str
    images: int | None = None  # budget in training images seen (default 600k, the shipped diffusion model's, when no minutes)
    minutes: float | None = None  # or a wall-clock budget, summed over resumes
    batch_size: int = 64
    lr_generator: float = 1e-4
    lr_discriminator: float = 2e-4
    classification_weight: float = 1.0  # StarGAN's lambda_cls
    cycle_weight: float = 10.0  # StarGAN's lambda_rec: G(G(x, target), source) = x
    identity_weight: float = 0.0  # G(x, source) = x: editing to its own emotion returns the face
    ema_decay: float = 0.999
    generator_channels: tuple[int, ...] = (32, 64, 128)
    residual_blocks: int = 4
    discriminator_channels: tuple[int, ...] = (32, 64, 128, 256)
    seed: int = 0
    device: str = "auto"
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    skip_bad: bool = False
    leave_out: str | None = None  # a file of Training positions to train without (emodiff find-hands)
    resume: bool = False
    stop_at_step: int | None = None


def write_gan_grid(editor, faces: FaceSet, path: Path, count: int = 8) -> None:
    """``count`` held-out faces (first column) and their edits to the 7 emotions, one row each."""
    from .grid import labelled_grid

    inputs = faces.images[:count]
    edits = editor.edit_faces(inputs, list(range(len(EMOTIONS))))
    save_image(labelled_grid(np.concatenate([inputs[:, None], edits], axis=1), col_labels=["input", *EMOTIONS]), path)


def train_gan(config: GanTrainConfig) -> dict:
    """StarGAN's objective (adversarial hinge loss, emotion classification by the discriminator,
    cycle reconstruction) with a spectrally normalised discriminator and EMA generator weights."""
    from diffusers.training_utils import EMAModel

    from .gan import ExpressionDiscriminator, ExpressionGenerator, GanEditor

    config = with_recorded_recipe(config)
    if config.images is not None and config.images < config.batch_size:
        raise ValueError(f"--images {config.images}: less than one batch of {config.batch_size}")
    budget_images = config.images if config.images or config.minutes else 600_000
    train, val = training_faces(config.data, config.skip_bad, config.leave_out)
    run = Run(config.out, resume=config.resume, device=config.device, seed=config.seed, checkpoint_minutes=config.checkpoint_minutes)
    accelerator, device = run.accelerator, run.accelerator.device
    run.announce("train-gan", len(train))
    images, labels = to_tensor(train.images), torch.from_numpy(train.labels)
    grid_faces = val if len(val) else train

    torch.manual_seed(config.seed)
    generator = ExpressionGenerator(channels=tuple(config.generator_channels), residual_blocks=config.residual_blocks)
    discriminator = ExpressionDiscriminator(channels=tuple(config.discriminator_channels))
    ema_generator = ExpressionGenerator.from_config(generator.config)
    # One Adam over both networks (a param group each): each step leaves the other network's
    # gradients at None, which Adam skips, and one optimizer keeps the checkpoint format of every run.
    optimizer = torch.optim.Adam(
        [{"params": generator.parameters(), "lr": config.lr_generator}, {"params": discriminator.parameters(), "lr": config.lr_discriminator}],
        betas=(0.5, 0.999),
    )
    scheduler = get_constant_schedule_with_warmup(optimizer, 0)
    batch_size = min(config.batch_size, len(train))
    total_steps = budget_images // batch_size if budget_images else None
    modules = {"generator": generator, "discriminator": discriminator, "ema": ema_generator}
    state = {"step": 0, "ema_step": 0}
    if run.resuming:
        state = run.restore(modules, optimizer, scheduler)
    else:
        ema_generator.load_state_dict(generator.state_dict())
    ema_generator.to(device)
    ema = EMAModel(ema_generator.parameters(), decay=config.ema_decay)
    ema.optimization_step = state["ema_step"]
    step = state["step"]
    run.start_trackers("train-gan", asdict(config))
    g_model, d_model, optimizer = accelerator.prepare(generator, discriminator, optimizer)
    window: dict[str, list[float]] = {}

    def log_window() -> None:
        row = {"step": step, "images_seen": step * batch_size, **{k: float(np.mean(v)) for k, v in window.items()}}
        run.metrics.log({**row, "minutes": run.minutes()})
        window.clear()

    def save(final: bool = False) -> None:
        if window:
            log_window()
        ema.copy_to(ema_generator.parameters())
        run.save(modules, optimizer, scheduler, {"step": step, "ema_step": ema.optimization_step, "config": asdict(config)})
        if not run.is_main:
            return
        editor = GanEditor(ema_generator).to(device)
        editor.save_pretrained(run.out)
        run.write_record({**asdict(config), "hardware": describe_hardware(accelerator)})
        write_gan_grid(editor, grid_faces, run.out / "samples" / f"images_{step * batch_size:09d}.png")

    limits = [s for s in (total_steps, config.stop_at_step) if s]
    stop = min(limits) if limits else None
    bar = tqdm(total=total_steps, initial=step, desc="train gan", disable=not run.is_main)
    g_model.train(), d_model.train()
    with run.checkpoint_on_interrupt(save):
        while (stop is None or step < stop) and (config.minutes is None or run.minutes() < config.minutes):
            index = run.batch(step, len(train), batch_size)
            g = run.generator(step)
            real = augment(images[index], g, flip=True).to(device)
            source = labels[index].to(device)
            target = torch.randint(0, len(EMOTIONS), (len(index),), generator=g).to(device)

            with accelerator.autocast():
                fake = g_model(real, target)
                cycled = g_model(fake, source)
                kept = g_model(real, source) if config.identity_weight else None

            # discriminator: real faces are real and show their emotion; the edits are fake
            with accelerator.autocast():
                real_score, real_logits = d_model(real)
                fake_score, _ = d_model(fake.detach())
            d_adversarial = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
            d_classification = F.cross_entropy(real_logits, source)
            d_loss = d_adversarial + config.classification_weight * d_classification
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            optimizer.step()  # the generator's gradients are None here: only the discriminator moves

            # generator: fool the (updated) discriminator, show the target, and come back to the face
            with accelerator.autocast():
                fake_score, fake_logits = d_model(fake)
            g_adversarial = -fake_score.mean()
            g_classification = F.cross_entropy(fake_logits, target)
            cycle = (cycled - real).abs().mean()
            identity = (kept - real).abs().mean() if kept is not None else torch.zeros((), device=device)
            g_loss = g_adversarial + config.classification_weight * g_classification + config.cycle_weight * cycle + config.identity_weight * identity
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(g_loss)
            discriminator.zero_grad(set_to_none=True)  # the discriminator does not learn from the generator's loss
            optimizer.step()
            scheduler.step()
            ema.step(generator.parameters())
            step += 1

            measured = {
                "d_loss": d_loss.item(), "d_classification": d_classification.item(), "g_adversarial": g_adversarial.item(),
                "g_classification": g_classification.item(), "cycle": cycle.item(), "identity": identity.item(),
                "real_emotion_accuracy": (real_logits.argmax(1) == source).float().mean().item(),
                "fake_target_accuracy": (fake_logits.argmax(1) == target).float().mean().item(),
            }  # fmt: skip
            for key, value in measured.items():
                window.setdefault(key, []).append(value)
            bar.update(1)
            bar.set_postfix(d=f"{d_loss.item():.3f}", cycle=f"{cycle.item():.3f}", target=f"{measured['fake_target_accuracy']:.2f}")
            if step % config.log_every == 0:
                log_window()
            if run.checkpoint_due():
                save()
    bar.close()
    save(final=True)
    accelerator.end_training()
    return {"step": step, "images_seen": step * batch_size, "minutes": run.minutes(), "is_main": run.is_main}
