"""FER-2013: loading both public layouts, a decoded cache, tensors and batch augmentation.

Images live in memory as one uint8 array (N, 48, 48): the whole data set is 80 MB, so there is
no reason for per-item datasets or worker processes on a 2-core machine.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .labels import EMOTIONS, SPLITS, FERDataError, parse_emotion, parse_split

IMAGE_SIZE = 48
# FER-2013's typical face: the medians over the 28,709 Training faces of each face's mean and
# standard deviation of grey level in its central 32x32 (TYPICAL_REGION). Portraits are flatter
# (their crops' standard deviation is 27 to 44); pipeline.to_typical_level brings a face here.
TYPICAL_LEVEL = (144.9, 67.1)
TYPICAL_REGION = (slice(8, 40), slice(8, 40))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CACHE_VERSION = 2

WHERE_TO_GET = (
    "FER-2013 is available from Kaggle: the CSV release 'fer2013.csv' "
    "(https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge) "
    "or the image-folder release (https://www.kaggle.com/datasets/msambare/fer2013). Accepted layouts: "
    "a CSV with header 'emotion,pixels,Usage' (plain or .gz), or a folder with "
    "train/<emotion>/*.jpg and test/<emotion>/*.jpg."
)


@dataclass(frozen=True)
class FaceSet:
    """Faces, their labels and their FER-2013 split, as parallel arrays."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, 0..6
    usage: np.ndarray  # (N,) int8, index into SPLITS

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> FaceSet:
        keep = self.usage == SPLITS.index(parse_split(name))
        return FaceSet(self.images[keep], self.labels[keep], self.usage[keep])

    def take(self, index: np.ndarray) -> FaceSet:
        return FaceSet(self.images[index], self.labels[index], self.usage[index])


# ----------------------------------------------------------------------------- loading


def load_fer2013(path: str | os.PathLike, *, skip_bad: bool = False, use_cache: bool = True) -> FaceSet:
    """Load FER-2013 from the Kaggle CSV (plain or .gz), the image-folder release or a mosaic
    (``save_mosaic``: a compact copy for moving the data to another machine).

    Bad rows are an error listing their line numbers unless ``skip_bad``; the decoded arrays are
    cached (keyed by the source's size and modification time) so the next load is a memory map.
    """
    path = Path(path)
    if not path.exists():
        raise FERDataError(f"FER-2013 not found at {path}. {WHERE_TO_GET}")
    cache = _cache_path(path, skip_bad) if use_cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            return FaceSet(saved["images"], saved["labels"], saved["usage"])
    if path.is_dir():
        faces = _load_folder(path, skip_bad)
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        faces = load_mosaic(path)
    else:
        try:
            faces = _load_csv(path, skip_bad)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise FERDataError(f"{path}: the gzip data is truncated or corrupt ({error}); download the file again") from None
        except (UnicodeDecodeError, csv.Error) as error:
            raise FERDataError(f"{path}: not a FER-2013 CSV text file ({error}). {WHERE_TO_GET}") from None
    if cache is not None:
        _write_cache(cache, faces)
    return faces


def _report_bad(source: Path, bad: list[str], skip_bad: bool) -> None:
    if not bad:
        return
    if not skip_bad:
        listed = "\n  ".join(bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise FERDataError(
            f"{source}: {len(bad)} bad row(s):\n  {listed}{more}\n(use --skip-bad to leave them out)"
        )
    print(f"{source}: skipped {len(bad)} bad row(s), e.g. {bad[0]}", file=sys.stderr)


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    # utf-8-sig: a header saved by Excel as "CSV UTF-8" starts with a byte-order mark
    return gzip.open(path, "rt", newline="", encoding="utf-8-sig") if gzipped else open(path, newline="", encoding="utf-8-sig")


def _load_csv(path: Path, skip_bad: bool) -> FaceSet:
    n_pixels = IMAGE_SIZE * IMAGE_SIZE
    images, labels, usage, bad = [], [], [], []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        if "emotion" not in header or "pixels" not in header:
            raise FERDataError(
                f"{path}: line 1 is {','.join(header)!r}; expected the header 'emotion,pixels,Usage'. {WHERE_TO_GET}"
            )
        col_emotion, col_pixels = header.index("emotion"), header.index("pixels")
        col_usage = header.index("usage") if "usage" in header else None
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                bad.append(f"line {line}: {len(row)} fields, expected {len(header)}")
                continue
            label = row[col_emotion].strip()
            if not (label.isdigit() and int(label) < len(EMOTIONS)):
                bad.append(f"line {line}: emotion {label!r} is not a label 0..{len(EMOTIONS) - 1}")
                continue
            split = row[col_usage].strip() if col_usage is not None else "Training"
            if split not in SPLITS:
                bad.append(f"line {line}: Usage {split!r} is not one of {', '.join(SPLITS)}")
                continue
            tokens = row[col_pixels].split()
            if len(tokens) != n_pixels:
                bad.append(f"line {line}: {len(tokens)} pixel values, expected {n_pixels}")
                continue
            try:
                pixels = np.array(tokens, dtype=np.int32)
            except ValueError:
                bad.append(f"line {line}: pixels are not all integers")
                continue
            if pixels.min() < 0 or pixels.max() > 255:
                bad.append(f"line {line}: pixel values outside 0..255")
                continue
            images.append(pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
            labels.append(int(label))
            usage.append(SPLITS.index(split))
    _report_bad(path, bad, skip_bad)
    return _faceset(images, labels, usage)


def _folder_files(root: Path) -> list[tuple[Path, int, int]]:
    """(file, label, split index) for train/<emotion>/* and test/<emotion>/*, in a stable order."""
    found = []
    for part, default_split in (("train", "Training"), ("test", "PublicTest")):
        part_dir = next((d for d in root.iterdir() if d.is_dir() and d.name.lower() == part), None)
        if part_dir is None:
            continue
        for emotion_dir in sorted(d for d in part_dir.iterdir() if d.is_dir()):
            label = parse_emotion(emotion_dir.name)
            for file in sorted(emotion_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                prefix = file.name.split("_", 1)[0]
                split = prefix if prefix in SPLITS else default_split
                found.append((file, label, SPLITS.index(split)))
    if not found:
        raise FERDataError(f"{root}: no images under train/<emotion>/ or test/<emotion>/. {WHERE_TO_GET}")
    found.sort(key=lambda item: (item[2], item[0].name))
    return found


def _load_folder(root: Path, skip_bad: bool) -> FaceSet:
    from PIL import Image

    images, labels, usage, bad = [], [], [], []
    for file, label, split in _folder_files(root):
        try:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("L"))
        except (OSError, ValueError) as error:
            bad.append(f"{file}: unreadable image ({error})")
            continue
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE):
            bad.append(f"{file}: size {pixels.shape[1]}x{pixels.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
            continue
        images.append(pixels)
        labels.append(label)
        usage.append(split)
    _report_bad(root, bad, skip_bad)
    return _faceset(images, labels, usage)


def _faceset(images: list, labels: list, usage: list) -> FaceSet:
    return FaceSet(
        np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        np.asarray(labels, dtype=np.int64),
        np.asarray(usage, dtype=np.int8),
    )


# ----------------------------------------------------------------------------- mosaic

MOSAIC_MAGIC = b"emodiff-fer2013-mosaic v1"
MOSAIC_COLUMNS = 256


def save_mosaic(faces: FaceSet, path: str | os.PathLike, quality: int = 95) -> None:
    """The faces as one JPEG of 48x48 tiles, labels and splits in its comment.

    Why: the CSV is 80 MB of text; a GPU machine that takes 64 MiB per call needs the Training
    split small. FER-2013's faces were JPEGs already, and 48 is a multiple of JPEG's 8x8 blocks, so
    at quality 95 the tiles come back within 0.1 grey levels on average and never bleed into
    each other. One byte per face (split << 4 | label) fits the comment's 64 KB up to 65,000 faces.
    """
    import base64

    from PIL import Image

    from .files import atomic_write

    count = len(faces)
    if not 0 < count <= 48_000:
        raise ValueError(f"a mosaic holds 1 to 48,000 faces (its labels live in a 64 KB JPEG comment), got {count}")
    rows = -(-count // MOSAIC_COLUMNS)
    columns = min(count, MOSAIC_COLUMNS)
    grid = np.zeros((rows * MOSAIC_COLUMNS, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    grid[:count] = faces.images
    sheet = grid.reshape(rows, MOSAIC_COLUMNS, IMAGE_SIZE, IMAGE_SIZE)[:, :columns].transpose(0, 2, 1, 3)
    codes = (faces.usage.astype(np.uint8) << 4) | faces.labels.astype(np.uint8)
    comment = MOSAIC_MAGIC + f" count={count}\n".encode() + base64.b64encode(codes.tobytes())
    image = Image.fromarray(np.ascontiguousarray(sheet.reshape(rows * IMAGE_SIZE, columns * IMAGE_SIZE)))
    options = dict(quality=quality, subsampling=0, optimize=True, progressive=True, comment=comment)  # optimize + progressive: 15% smaller, same pixels
    atomic_write(Path(path), lambda temp: image.save(temp, format="JPEG", **options))


def load_mosaic(path: Path) -> FaceSet:
    import base64
    import binascii

    from PIL import Image

    try:
        with Image.open(path) as image:
            comment, pixels = image.info.get("comment", b""), np.asarray(image.convert("L"))
        head, _, body = comment.partition(b"\n")
        if not head.startswith(MOSAIC_MAGIC):
            raise ValueError("no emodiff mosaic comment")
        count = int(head.split(b"count=")[1])
        codes = np.frombuffer(base64.b64decode(body, validate=True), np.uint8)
    except (OSError, ValueError, IndexError, binascii.Error) as error:
        raise FERDataError(f"{path}: not an emodiff FER-2013 mosaic ({error}); make one with 'emodiff pack-data'. {WHERE_TO_GET}") from None
    rows, columns = pixels.shape[0] // IMAGE_SIZE, pixels.shape[1] // IMAGE_SIZE
    tiles = pixels[: rows * IMAGE_SIZE, : columns * IMAGE_SIZE].reshape(rows, IMAGE_SIZE, columns, IMAGE_SIZE).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels, usage = codes & 0x0F, codes >> 4
    if len(codes) != count or len(tiles) < count or labels.max(initial=0) >= len(EMOTIONS) or usage.max(initial=0) >= len(SPLITS):
        raise FERDataError(f"{path}: the mosaic's comment does not match its {len(tiles)} tiles (truncated or edited file)")
    return FaceSet(np.ascontiguousarray(tiles[:count]), labels.astype(np.int64), usage.astype(np.int8))


# ----------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    return Path(os.environ.get("EMODIFF_CACHE_DIR", Path.home() / ".cache" / "emodiff"))


def _cache_path(source: Path, skip_bad: bool) -> Path:
    """A cache file named by everything that would change the decoded arrays."""
    source = source.resolve()
    stats = [(str(source), source.stat().st_size, source.stat().st_mtime_ns)]
    if source.is_dir():
        stats += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f, _, _ in _folder_files(source)]
    key = hashlib.sha1(repr((CACHE_VERSION, skip_bad, stats)).encode()).hexdigest()[:16]
    return cache_dir() / f"fer2013-{key}.npz"


def _write_cache(cache: Path, faces: FaceSet) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    with open(partial, "wb") as handle:
        np.savez(handle, images=faces.images, labels=faces.labels, usage=faces.usage)
    os.replace(partial, cache)


# ----------------------------------------------------------------------------- tensors


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W) in [-1, 1], the range every model here takes."""
    writable = np.require(images, dtype=np.uint8, requirements=["C", "W"])  # copies only read-only views (PIL)
    return torch.from_numpy(writable).float().div(127.5).sub(1.0).unsqueeze(1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B, 1, H, W) in [-1, 1] -> uint8 (B, H, W)."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].cpu().numpy()


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    flip: bool = True,
    max_shift: float = 0.0,
    max_rotate_deg: float = 0.0,
    max_scale: float = 0.0,
) -> torch.Tensor:
    """Random horizontal flips and one random affine warp per image, all in one batched resample."""
    batch = images.shape[0]
    uniform = lambda: torch.rand(batch, generator=generator).mul(2).sub(1)  # noqa: E731  U(-1, 1)
    flip_sign = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(batch)
    if not (max_shift or max_rotate_deg or max_scale):
        return torch.where(flip_sign.view(-1, 1, 1, 1) < 0, images.flip(-1), images)
    angle = uniform() * math.radians(max_rotate_deg)
    scale = 1.0 + uniform() * max_scale
    shift = torch.stack([uniform(), uniform()], dim=1) * max_shift * 2  # grid units span 2
    return affine_warp(images, angle, scale, shift, flip_sign)


def draw_fingers(images: torch.Tensor, generator: torch.Generator, fraction: float) -> torch.Tensor:
    """``fraction`` of the faces (B, 1, H, W in [-1, 1]) with 2 to 4 parallel bars drawn over them,
    finger-wide (2 or 3 pixels, 1 or 2 apart), 8 to 20 pixels long, at one random grey, anywhere in
    the lower two thirds: the hands that FER-2013's fear and surprise faces hold at the mouth, drawn
    on faces of every emotion, so a classifier trained on them stops reading a hand as an emotion (a
    guide that does draws hands over smiling mouths: docs/photo_experiments.md, "The pale streaks
    are hands")."""
    batch, _, height, width = images.shape
    draws = torch.rand(batch, 8, generator=generator)  # per face: whether, count, width, gap, length, grey, x, y
    drawn = images.clone()
    columns = torch.arange(width)
    rows = torch.arange(height)
    for face in torch.nonzero(draws[:, 0] < fraction).flatten().tolist():
        count, bar, gap = 2 + int(draws[face, 1] * 3), 2 + int(draws[face, 2] * 2), 1 + int(draws[face, 3] * 2)
        length = 8 + int(draws[face, 4] * 13)
        span = count * bar + (count - 1) * gap
        left = int(draws[face, 6] * (width - span + 1))
        top = height // 3 + int(draws[face, 7] * (height - height // 3 - length + 1))
        inside = ((columns - left) % (bar + gap) < bar) & (columns >= left) & (columns < left + span)
        mask = inside[None, :] & (rows[:, None] >= top) & (rows[:, None] < top + length)
        drawn[face, :, mask] = float(draws[face, 5]) * 2 - 1
    return drawn


def affine_warp(
    images: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, flip_sign: torch.Tensor
) -> torch.Tensor:
    """Resample each image rotated by ``angle`` (radians), zoomed by ``scale``, moved by ``shift``
    ((B, 2), grid units: the image spans 2) and mirrored where ``flip_sign`` is -1, edges repeated.

    Always in fp32: under bf16 autocast the sampling grid itself is rounded and blurs the image.
    """
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip_sign, -sin, shift[:, 0]], 1), torch.stack([sin * flip_sign, cos, shift[:, 1]], 1)], 1
    )
    with torch.autocast(images.device.type, enabled=False):
        grid = F.affine_grid(theta.to(images.device, torch.float32), list(images.shape), align_corners=False)
        return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
