"""What ships besides the weights: seven FER-2013 PublicTest faces (one per emotion) and a public-domain
photo, and the square views the demo grid and the web app's strip show them in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ASSETS = Path(__file__).parent / "assets"
CELL = 96  # side of one view in the demo grid and the app's strip


def sample_faces() -> list[Path]:
    return sorted((ASSETS / "faces").glob("*.png"))


def sample_photos() -> list[Path]:
    """NASA's portrait of Eileen Collins (public domain, from scikit-image's data)."""
    return sorted((ASSETS / "photos").glob("*.jpg"))


def square_around(face, photo: Image.Image, margin: float = 0.6) -> tuple[int, int, int, int]:
    """A square box around a detected face with ``margin`` of its width on each side, inside the photo."""
    left, top, right, bottom = face.box
    side = (right - left) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = min(side / 2, cx, cy, photo.width - cx, photo.height - cy)
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


def view(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """An RGB CELL x CELL view: a whole face crop, or a box around a face in a photo."""
    region = image.crop(box) if box else image
    return np.asarray(region.convert("RGB").resize((CELL, CELL), Image.BICUBIC))


def face_box(prepared, photo: Image.Image):
    """The view box of a prepared input: around its first face in a photo, None for a crop."""
    return square_around(prepared.faces[0], photo) if prepared.faces else None


def demo_grid(pipeline, settings, seed: int = 0) -> tuple[Image.Image, int]:
    """The bundled faces and photo edited to every emotion, as one labelled grid; and how many inputs."""
    from .grid import labelled_grid
    from .labels import EMOTIONS
    from .photos import Preparer, load_photo

    prepare = Preparer("largest")
    inputs = [(p.stem.replace("publictest_", "FER "), load_photo(p)) for p in sample_faces()]
    inputs += [(f"photo: {p.stem}", load_photo(p)) for p in sample_photos()]
    prepared = [prepare(image) for _, image in inputs]
    outputs, _, _ = pipeline.edit_prepared(prepared, list(range(len(EMOTIONS))), settings, seed=seed)
    rows = []
    for (_, image), ready, results in zip(inputs, prepared, outputs):
        box = face_box(ready, image)
        rows.append([view(image, box)] + [view(result, box) for result in results])
    return labelled_grid(np.asarray(rows), [name for name, _ in inputs], ["input", *EMOTIONS], scale=1), len(inputs)
