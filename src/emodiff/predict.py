"""Emotion prediction on face images with a shipped (or given) classifier."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .data import EMOTIONS, IMAGE_SIZE, to_tensor
from .encoders import EmotionClassifier, load_encoder

SAMPLE_FACES = Path(__file__).parent / "assets" / "faces"


def sample_faces() -> list[Path]:
    return sorted(SAMPLE_FACES.glob("*.png"))


def read_face(path: str | Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """Any image file as a size x size uint8 grayscale face (centre square crop, then resize)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        gray = ImageOps.exif_transpose(image).convert("L")
    side = min(gray.size)
    left, top = (gray.width - side) // 2, (gray.height - side) // 2
    return np.asarray(gray.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))


def predict_files(images: list[str], model: str | None = None, device: str = "auto") -> int:
    """Print each image's predicted emotion and confidence; unreadable files are named and skipped."""
    classifier = load_encoder(model or "cnn")
    if not isinstance(classifier, EmotionClassifier):
        raise ValueError(f"{model}: {type(classifier).__name__} is not an emotion classifier")
    target = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    classifier.to(target)
    paths = images or [str(p) for p in sample_faces()]
    faces, names, failed = [], [], 0
    for path in paths:
        try:
            faces.append(read_face(path))
            names.append(path)
        except (OSError, ValueError) as error:
            print(f"{path}: cannot read image ({error})", file=sys.stderr)
            failed += 1
    if faces:
        probs = classifier.predict_proba(to_tensor(np.stack(faces)).to(target)).cpu()
        for name, p in zip(names, probs):
            best = int(p.argmax())
            print(f"{name}: {EMOTIONS[best]} ({p[best]:.0%})")
    return 1 if failed else 0
