"""Emotion and split names, and their parsing: no torch, so the command line answers at once."""

from __future__ import annotations

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS = ("Training", "PublicTest", "PrivateTest")


class FERDataError(ValueError):
    """A data file or value that cannot be used; the message says where and what is expected."""


def parse_emotion(value: int | str) -> int:
    """An emotion as a label index: accepts 0..6, '0'..'6' or a name in any case."""
    text = str(value).strip().lower()
    if text in EMOTIONS:
        return EMOTIONS.index(text)
    if text.isdigit() and int(text) < len(EMOTIONS):
        return int(text)
    raise FERDataError(
        f"unknown emotion {value!r}: expected one of {', '.join(EMOTIONS)} (or 0..{len(EMOTIONS) - 1})"
    )


def parse_emotions(spec: str) -> list[int]:
    """A comma-separated list of emotions, or 'all' for the seven in label order."""
    if spec.strip().lower() == "all":
        return list(range(len(EMOTIONS)))
    labels = [parse_emotion(part) for part in spec.split(",") if part.strip()]
    if not labels:
        raise FERDataError(f"no emotion given in {spec!r}: expected names like 'happy,sad' or 'all'")
    return labels


def parse_split(name: str) -> str:
    for split in SPLITS:
        if split.lower() == str(name).strip().lower():
            return split
    raise FERDataError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
