"""Editing image files: read, batch across inputs, write every result atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .data import EMOTIONS, IMAGE_SIZE, parse_emotion, parse_emotions
from .files import save_image
from .grid import labelled_grid
from .pipeline import EditSettings, EmotionEditPipeline, sampling_scheduler


def read_gray(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("L")


def load_pipeline(model: str | None, scheduler: str, device: str) -> EmotionEditPipeline:
    pipeline = EmotionEditPipeline.from_pretrained(model, device=device)
    pipeline.scheduler = sampling_scheduler(scheduler, pipeline.scheduler)
    return pipeline


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (face, face-2, ...) so two inputs never write the same output."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


def run_edit(args) -> int:
    """``emodiff edit``: every option is checked before any model is loaded or file written."""
    targets = parse_emotions(args.to)
    source = parse_emotion(args.source) if args.source is not None else None
    settings = EditSettings(mode=args.mode, strength=args.strength, steps=args.steps, guidance=args.guidance)
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    pipeline = load_pipeline(args.model, args.scheduler, args.device)

    inputs, failed = [], 0
    for path in map(Path, args.images):
        try:
            inputs.append((path, read_gray(path)))
        except (OSError, ValueError) as error:
            print(f"{path}: cannot read image ({error})", file=sys.stderr)
            failed += 1
    out = Path(args.out)
    stems = unique_stems([path for path, _ in inputs])
    names = [EMOTIONS[t] for t in targets]
    batches = range(0, len(inputs), args.batch_size)
    for start in tqdm(batches, desc="editing", unit="batch", disable=len(batches) < 2):
        chunk = inputs[start : start + args.batch_size]
        sources = None if source is None else [source] * len(chunk)
        images = [image for _, image in chunk]
        edited = pipeline.edit(images, targets, source=sources, settings=settings, seed=args.seed)
        for image, stem, row in zip(images, stems[start:], edited):
            for name, result in zip(names, row):
                save_image(result, out / f"{stem}_{name}.png")
            if args.grid:
                cells = np.stack([np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)) for im in [image, *row]])
                save_image(labelled_grid(cells[None], col_labels=["input", *names]), out / f"{stem}_grid.png")
    print(f"wrote {len(inputs) * len(targets)} edit(s) of {len(inputs)} face(s) to {out}")
    if failed:
        print(f"{failed} input(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def run_sample(args) -> int:
    label = parse_emotion(args.emotion)
    if args.n <= 0 or args.steps <= 0:
        raise ValueError("-n and --steps must be positive")
    pipeline = load_pipeline(args.model, args.scheduler, args.device)
    faces = pipeline.sample(label, args.n, steps=args.steps, guidance=args.guidance, seed=args.seed)
    for i, face in enumerate(faces):
        save_image(face, Path(args.out) / f"{EMOTIONS[label]}_{i:03d}.png")
    print(f"wrote {len(faces)} {EMOTIONS[label]} face(s) to {args.out}")
    return 0
