"""Atomic file output: a reader (or a killed run) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Call ``write(temp_path)`` and move the result onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temp))
        os.chmod(temp, _umask_mode())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def image_format(path: Path) -> str:
    """Pillow's format name for a file suffix (PNG when unknown)."""
    return Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")


def save_image(image: Image.Image, path: Path, options: dict | None = None) -> None:
    """Format from the suffix (PNG when unknown); ``options`` go to Pillow (e.g. ``photos.save_options``).
    JPEG and WebP without quantisation tables of their own are written at quality 95."""
    fmt = image_format(path)
    options = dict(options or {})
    if fmt in ("JPEG", "WEBP") and "qtables" not in options:
        options.setdefault("quality", 95)
    atomic_write(path, lambda temp: image.save(temp, format=fmt, **options))


def save_model_dir(model, directory: Path, fp16: bool = False) -> None:
    """``save_pretrained`` into a temp folder, then move each file into place atomically.

    ``fp16`` saves a half-precision copy; the live model keeps its precision.
    """
    import copy

    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fp16:
        model = torch.nn.Module.to(copy.deepcopy(model), torch.float16)  # nn.Module's own cast: no diffusers warning
    with tempfile.TemporaryDirectory(dir=directory, prefix=".save-") as temp:
        model.save_pretrained(temp)
        for file in Path(temp).iterdir():
            os.chmod(file, _umask_mode())
            os.replace(file, directory / file.name)
