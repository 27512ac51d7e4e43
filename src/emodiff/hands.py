"""Faces with a hand on them: found, so training can leave them out and evaluation can count them.

A hand over the mouth, cheek or brow is on a third of FER-2013's fear faces, a quarter of its surprise
faces and a sixth of its sad ones, against 1 in 100 happy faces (1,000 Training faces looked at one by
one; ``LABELS``). A model trained on them draws hands into fear, surprise and sad edits, and the
judges learned the same, so they read a hand as fear and no emotion score sees the flaw; counting
hands does. (Training without the hand faces halved that count, but a broad smile turned fearful
still gets pale, finger-wide bands over the mouth, most likely the decode hiding teeth it cannot remove; README
"Counting hands, and training without them".)

Detection is a logistic regression on a trained classifier's features, fitted to those labelled faces
(a few seconds): which classifier depends on the use. Leaving faces out of training uses the semantic
CNN encoder, which never judges; counting hands in edits uses the judge, which never steers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import FaceSet, to_tensor
from .encoders import EmotionCNN
from .files import atomic_write
from .labels import EMOTIONS

# Training-split positions (0-based, in the Kaggle CSV's order) looked at and marked 1 (a hand touches or
# covers the face) or 0: 1,000 drawn at random, stratified by emotion, then 500 more around the
# detector's doubt; with each labelled face's mean grey level, to recognise the split they belong to.
LABELS = Path(__file__).parent / "assets" / "hands" / "fer2013_training_hands.json"


@dataclass
class HandDetector:
    """p(hand) of faces from ``encoder``'s features, standardised and weighed by a logistic regression;
    it keeps the labelled faces' features it was fitted to, to say how well it finds them."""

    encoder: torch.nn.Module
    mean: np.ndarray
    scale: np.ndarray
    regression: object  # sklearn LogisticRegression
    labelled: np.ndarray  # standardised features of the labelled faces
    hand: np.ndarray  # their labels, 1 hand, 0 none

    def probability(self, images: torch.Tensor) -> np.ndarray:
        """p(hand) of (B, 1, 48, 48) faces in [-1, 1]."""
        features = (encoder_features(self.encoder, images) - self.mean) / self.scale
        return self.regression.predict_proba(features)[:, 1]

    def cross_validated(self, threshold: float, folds: int = 5) -> dict[str, float]:
        """Average precision, and recall and precision from ``threshold``, on the labelled faces, each
        predicted by a detector fitted to the other folds (the labels over-represent doubtful faces)."""
        from sklearn.base import clone
        from sklearn.metrics import average_precision_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        split = StratifiedKFold(folds, shuffle=True, random_state=0)
        held_out = cross_val_predict(clone(self.regression), self.labelled, self.hand, cv=split, method="predict_proba")[:, 1]
        found = held_out >= threshold
        return {
            "average_precision": float(average_precision_score(self.hand, held_out)),
            "recall": float(found[self.hand == 1].mean()),
            "precision": float(self.hand[found].mean()) if found.any() else 0.0,
        }


@torch.no_grad()
def encoder_features(encoder: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The features a hand is read from: the CNN encoder's code and its last convolutional map
    (where on the face something is), or the judge's pooled features."""
    encoder = encoder.eval()
    device = next(encoder.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        parts = [encoder.encode(batch)]
        if isinstance(encoder, EmotionCNN):  # its code alone loses where on the face things are
            parts.append(encoder.features(batch))
        chunks.append(torch.cat(parts, 1).float().cpu().numpy())
    return np.concatenate(chunks)


def _read_labels(path: Path) -> tuple[dict[int, int], dict]:
    """The labels file's {Training position: 1 hand, 0 none} and its whole content; a clear error for a malformed file."""
    try:
        content = json.loads(path.read_text())
        labels = {int(position): int(hand) for position, hand in content["labels"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a hand-labels file (expected JSON {{\"labels\": {{position: 0 or 1}}}}; {error})") from None
    if not labels or set(labels.values()) - {0, 1}:
        raise ValueError(f"{path}: expected labels 0 (no hand) or 1 (hand) for at least one face")
    return labels, content


def load_labels(path: str | os.PathLike = LABELS) -> dict[int, int]:
    """{Training position: 1 hand, 0 none}; a clear error for a malformed file."""
    return _read_labels(Path(path))[0]


def checked_labels(train: FaceSet, path: str | os.PathLike = LABELS) -> dict[int, int]:
    """The shipped labels (``load_labels``), refused for a Training split they do not describe: too
    short, or in another order (the image-folder release), where position n is another face."""
    path = Path(path)
    labels, content = _read_labels(path)
    positions = np.array(sorted(labels))
    if positions.max() >= len(train):
        raise ValueError(f"{path} marks Training face {positions.max()}, but the data has {len(train)} Training faces: "
                         "the labels belong to the full FER-2013 Training split")  # fmt: skip
    face_means = np.asarray(content.get("face_means", []), dtype=np.float64)
    if face_means.shape != positions.shape:
        raise ValueError(f"{path}: expected \"face_means\", one mean grey level per labelled face ({len(positions)}), "
                         "to recognise the Training split the labels belong to")  # fmt: skip
    means = train.images[positions].reshape(len(positions), -1).mean(1)
    if np.abs(means - face_means).mean() > 1.0:  # a JPEG mosaic of the same faces differs by ~0.1
        raise ValueError(f"{path}: the data's Training faces are not the labelled ones at the same positions: the labels "
                         "follow the Kaggle CSV's Training rows in file order (the CSV, or a pack-data mosaic of it)")  # fmt: skip
    return labels


def fit_detector(train: FaceSet, encoder: torch.nn.Module, labels: dict[int, int] | None = None, strength: float = 0.003) -> HandDetector:
    """Fit p(hand) on ``encoder``'s features of the labelled Training faces (the shipped labels, checked
    against ``train``, unless ``labels`` are given).

    ``strength`` is the inverse L2 penalty; 0.003 was the best of 0.003-0.03 by five-fold cross-validated
    average precision on the CNN encoder (0.80; at 0.3: recall 0.86, precision 0.57 on the labelled
    faces, which are enriched in doubtful ones)."""
    from sklearn.linear_model import LogisticRegression

    labels = checked_labels(train) if labels is None else labels
    positions = np.array(sorted(labels))
    if positions.max() >= len(train):
        raise ValueError(f"labels mark Training face {positions.max()}, but the data has {len(train)} Training faces")
    features = encoder_features(encoder, to_tensor(train.images[positions]))
    mean, scale = features.mean(0), features.std(0) + 1e-6
    labelled, hand = (features - mean) / scale, np.array([labels[p] for p in positions])
    regression = LogisticRegression(C=strength, max_iter=3000, class_weight="balanced").fit(labelled, hand)
    return HandDetector(encoder, mean, scale, regression, labelled, hand)


def find_hands(train: FaceSet, detector: HandDetector, threshold: float, labels: dict[int, int] | None = None) -> np.ndarray:
    """Training positions whose p(hand) is at least ``threshold``; every labelled face as labelled."""
    probability = detector.probability(to_tensor(train.images))
    for position, hand in (load_labels() if labels is None else labels).items():
        probability[position] = float(hand)
    return np.flatnonzero(probability >= threshold)


def write_leave_out(path: str | os.PathLike, positions: np.ndarray, train: FaceSet, about: str) -> dict[str, int]:
    """Write the leave-out file ``--leave-out`` reads; returns the count per emotion."""
    counts = {emotion: int((train.labels[positions] == index).sum()) for index, emotion in enumerate(EMOTIONS)}
    text = json.dumps({"about": about, "split": "Training", "counts": counts, "positions": positions.tolist()}) + "\n"
    atomic_write(Path(path), lambda temp: temp.write_text(text))
    return counts


def read_leave_out(path: str | os.PathLike, train_size: int) -> np.ndarray:
    """Training positions a leave-out file lists, checked against the data's Training split."""
    path = Path(path)
    try:
        positions = np.asarray(json.loads(path.read_text())["positions"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a leave-out file (expected JSON {{\"positions\": [Training positions]}}, as find-hands writes; {error})") from None
    if positions.ndim != 1 or (len(positions) and (positions.min() < 0 or positions.max() >= train_size)):
        raise ValueError(f"{path}: positions must be 0..{train_size - 1}, the data's Training faces in file order")
    return np.unique(positions)
