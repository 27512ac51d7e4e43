"""``emodiff demo``: the bundled faces and photo, edited to every emotion, in one labelled grid."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from .data import EMOTIONS
from .editing import Preparer, edit_prepared, load_pipeline
from .faces import load_photo
from .files import save_image
from .grid import labelled_grid
from .pipeline import EditSettings
from .predict import sample_faces

SAMPLE_PHOTOS = Path(__file__).parent / "assets" / "photos"
CELL = 96


def _cell(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """An RGB CELL x CELL view: a whole face crop, or a square around a face in a photo."""
    view = image.crop(box) if box else image
    return np.asarray(view.convert("RGB").resize((CELL, CELL), Image.BICUBIC))


def _square_around(face, photo: Image.Image, margin: float = 0.6) -> tuple[int, int, int, int]:
    left, top, right, bottom = face.box
    side = (right - left) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = min(side / 2, cx, cy, photo.width - cx, photo.height - cy)
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


def run_demo(args) -> int:
    started = time.perf_counter()
    settings = EditSettings.from_options(args)
    pipeline = load_pipeline(args.model, args.scheduler, args.device)
    prepare = Preparer("largest")
    inputs = [(p.stem.replace("publictest_", "FER "), load_photo(p)) for p in sample_faces()]
    inputs += [(f"photo: {p.stem}", load_photo(p)) for p in sorted(SAMPLE_PHOTOS.glob("*.jpg"))]
    prepared = [prepare(image) for _, image in inputs]
    outputs, _, _ = edit_prepared(pipeline, prepared, list(range(len(EMOTIONS))), settings, seed=args.seed)
    rows = []
    for (_, image), ready, results in zip(inputs, prepared, outputs):
        box = _square_around(ready.faces[0], image) if ready.faces else None
        rows.append([_cell(image, box)] + [_cell(result, box) for result in results])
    grid = labelled_grid(np.asarray(rows), [name for name, _ in inputs], ["input", *EMOTIONS], scale=1)
    out = Path(args.out)
    save_image(grid, out)
    print(f"edited {len(inputs)} faces to {len(EMOTIONS)} emotions in {time.perf_counter() - started:.1f} s: {out}")
    return 0
