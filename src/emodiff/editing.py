"""Editing image files: face crops or whole photos in, edited images out, written atomically.

An input no larger than 64x64 is taken as a face crop and edited whole (output: 8-bit grayscale
at its size). A larger input is a photo: its faces are detected and aligned (``faces.py``),
edited as 48x48 crops, and the change is put back into the photo's luminance (output: the photo
at its size, colours kept, in its own format). The faces of many inputs are edited in one batch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import faces as face_ops
from .data import EMOTIONS, IMAGE_SIZE, IMAGE_SUFFIXES, parse_emotion, parse_emotions
from .files import save_image
from .grid import labelled_grid
from .pipeline import EditSettings, EmotionEditPipeline, sampling_scheduler

@dataclass
class Prepared:
    """One input ready to edit: its crops, and how to put edits back."""

    image: Image.Image
    crops: np.ndarray  # uint8 (n, 48, 48)
    faces: list | None = None  # None: the input is itself a face crop

    def render(self, edits: np.ndarray) -> list[Image.Image]:
        """Edited crops (n, T, 48, 48) -> one output image per target."""
        results = []
        for target in range(edits.shape[1]):
            if self.faces is None:
                results.append(Image.fromarray(edits[0, target]).resize(self.image.size, Image.BICUBIC))
                continue
            photo = self.image
            for face, crop, edit in zip(self.faces, self.crops, edits[:, target]):
                photo = face_ops.paste(photo, face, crop, edit)
            results.append(photo)
        return results


class Preparer:
    """Turns images into crops: small ones as they are, photos through face detection."""

    def __init__(self, face: str = "largest", detect: bool = True):
        self.face, self.detect = face_ops.parse_face_choice(face), detect
        self._finder = None

    def __call__(self, image: Image.Image) -> Prepared:
        if not self.detect or face_ops.is_face_crop(image):
            gray = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
            return Prepared(image.convert("L"), np.asarray(gray)[None])
        if self._finder is None:
            self._finder = face_ops.FaceFinder()
        found = self._finder.find(image)
        if not found:
            raise face_ops.NoFaceError("no face found (use --no-detect if the image is already a face crop)")
        chosen = face_ops.select(found, self.face)
        return Prepared(image, np.stack([face_ops.crop(image, face) for face in chosen]), chosen)


def edit_prepared(pipeline, prepared: list[Prepared], targets, settings, source=None, seed=0):
    """Edit the crops of several inputs in one batch.

    Returns the output images (per input, per target), the edited crops (all faces, T, 48, 48)
    and the offsets of each input's faces in them.
    """
    crops = np.concatenate([p.crops for p in prepared])
    sources = None if source is None else [source] * len(crops)
    edits = pipeline.edit_faces(crops, targets, settings, source_labels=sources, seed=seed)
    bounds = np.cumsum([0] + [len(p.crops) for p in prepared])
    return [p.render(edits[start:end]) for p, start, end in zip(prepared, bounds[:-1], bounds[1:])], edits, bounds


def load_pipeline(model: str | None, scheduler: str, device: str) -> EmotionEditPipeline:
    pipeline = EmotionEditPipeline.from_pretrained(model, device=device)
    pipeline.scheduler = sampling_scheduler(scheduler, pipeline.scheduler)
    return pipeline


def expand_inputs(arguments: list[str]) -> list[Path]:
    """Files as given; folders as the image files directly inside them, sorted."""
    paths = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            paths += sorted(p for p in argument.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(argument)
    return paths


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (face, face-2, ...) so two inputs never write the same output."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


def output_suffix(path: Path, prepared: Prepared) -> str:
    """Face crops become PNG; photos keep their format (JPEG, PNG, WebP)."""
    suffix = path.suffix.lower()
    return suffix if prepared.faces is not None and suffix in {".jpg", ".jpeg", ".png", ".webp"} else ".png"


def run_edit(args) -> int:
    """``emodiff edit``: every option is checked before any model is loaded or file written."""
    targets = parse_emotions(args.to)
    source = parse_emotion(args.source) if args.source is not None else None
    settings = EditSettings.from_options(args)
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    prepare = Preparer(args.face, detect=not args.no_detect)
    pipeline = load_pipeline(args.model, args.scheduler, args.device)

    paths = expand_inputs(args.images)
    stems = dict(zip(paths, unique_stems(paths)))
    out, names, failed, written = Path(args.out), [EMOTIONS[t] for t in targets], 0, 0
    with tqdm(total=len(paths), desc="editing", unit="image", disable=len(paths) < 2) as bar:
        for start in range(0, len(paths), args.batch_size):
            ready: list[tuple[Path, Prepared]] = []
            for path in paths[start : start + args.batch_size]:
                try:
                    ready.append((path, prepare(face_ops.load_photo(path))))
                except (OSError, ValueError) as error:  # unreadable file, no face, bad --face index
                    bar.write(f"{path}: {error}" if isinstance(error, ValueError) else f"{path}: cannot read image ({error})", file=sys.stderr)
                    failed += 1
            if ready:
                outputs, edits, bounds = edit_prepared(pipeline, [p for _, p in ready], targets, settings, source, args.seed)
                for (path, prepared), results, first, last in zip(ready, outputs, bounds[:-1], bounds[1:]):
                    written += write_outputs(out, stems[path], output_suffix(path, prepared), names, prepared, results, edits[first:last], args)
            bar.update(len(paths[start : start + args.batch_size]))
    print(f"wrote {written} edited image(s) of {len(paths) - failed} input(s) to {out}")
    if failed:
        print(f"{failed} input(s) could not be edited", file=sys.stderr)
    return 1 if failed or not paths else 0


def write_outputs(out: Path, stem: str, suffix: str, names, prepared: Prepared, results, edits, args) -> int:
    for name, result in zip(names, results):
        save_image(result, out / f"{stem}_{name}{suffix}")
    if args.crop and prepared.faces is not None:
        for index, (crop, row) in enumerate(zip(prepared.crops, edits)):
            save_image(Image.fromarray(crop), out / f"{stem}_face{index}.png")
            for name, edit in zip(names, row):
                save_image(Image.fromarray(edit), out / f"{stem}_face{index}_{name}.png")
    if args.grid:
        cells = np.concatenate([prepared.crops[:, None], edits], axis=1)
        labels = [f"face {i}" for i in range(len(cells))] if prepared.faces is not None else []
        save_image(labelled_grid(cells, labels, ["input", *names]), out / f"{stem}_grid.png")
    return len(results)


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
