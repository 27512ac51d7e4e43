"""Emotion prediction on face crops and photos with a shipped (or given) classifier; faces in
photos are found and framed exactly as ``emodiff edit`` frames them (``photos.Preparer``)."""

from __future__ import annotations

import sys

import numpy as np

from .labels import EMOTIONS


def predict_files(images: list[str], model: str | None = None, device: str = "auto", face: str = "largest") -> int:
    """Print each face's predicted emotion and confidence; unreadable files are named and skipped."""
    from .assets import sample_faces
    from .data import to_tensor
    from .devices import resolve_device
    from .encoders import EmotionClassifier, load_encoder
    from .photos import Preparer, load_photo

    target = resolve_device(device)
    classifier = load_encoder(model or "cnn")
    if not isinstance(classifier, EmotionClassifier):
        raise ValueError(f"{model}: {type(classifier).__name__} is not an emotion classifier")
    classifier.to(target)
    prepare = Preparer(face)
    crops, names, failed = [], [], 0
    for path in images or [str(p) for p in sample_faces()]:
        try:
            prepared = prepare(load_photo(path))
        except (OSError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            failed += 1
            continue
        crops.extend(prepared.crops)
        several = len(prepared.crops) > 1
        names += [f"{path} face {i}" if several else str(path) for i in range(len(prepared.crops))]
    if crops:
        probs = classifier.predict_proba(to_tensor(np.stack(crops)).to(target)).cpu()
        for name, p in zip(names, probs):
            best = int(p.argmax())
            print(f"{name}: {EMOTIONS[best]} ({p[best]:.0%})")
    return 1 if failed else 0
