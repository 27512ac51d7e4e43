"""Real photos: find faces, crop them the way FER-2013 frames faces, and put edits back.

Detection is dlib's HOG frontal-face detector (built into dlib, nothing to download); alignment
uses the 5-point landmarks shipped in face_recognition_models. A face is cropped by the similarity
transform that puts its eye centres where FER-2013 crops have them, measured with the same
landmarks on 600 FER training faces (median left eye (0.315, 0.401), right eye (0.677, 0.391)).

The edit goes back as a *change* of luminance: (edited crop - original crop), upsampled into the
photo under a feathered ellipse and added equally to R, G and B. Adding the same amount to all
three channels leaves Cb and Cr unchanged, so colour is kept, the photo's own detail and
resolution stay, and every pixel outside the mask is bit-identical to the input.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .data import IMAGE_SIZE

EYE_CENTRE = (0.496, 0.396)  # midpoint of the eyes in a FER crop, as fractions of its side
EYE_DISTANCE = 0.362  # distance between the eye centres, as a fraction of the side
FACE_ELLIPSE = (0.5, 0.55, 0.40, 0.50)  # centre x, y and radii of the pasted region, fractions of the side
CROP_LIMIT = 64  # inputs no larger than this on both sides are taken as face crops already


class NoFaceError(ValueError):
    """A photo in which no face was found."""


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in photo pixels
    left_eye: tuple[float, float]  # eye centres in photo pixels (left as seen in the image)
    right_eye: tuple[float, float]

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    def crop_to_photo(self, size: int = IMAGE_SIZE) -> tuple[float, ...]:
        """Affine coefficients (a, b, c, d, e, f): crop pixel (u, v) -> photo (a u + b v + c, d u + e v + f)."""
        (lx, ly), (rx, ry) = self.left_eye, self.right_eye
        angle = math.atan2(ry - ly, rx - lx)
        scale = math.hypot(rx - lx, ry - ly) / (EYE_DISTANCE * size)
        a, b = scale * math.cos(angle), -scale * math.sin(angle)
        d, e = scale * math.sin(angle), scale * math.cos(angle)
        cu, cv = EYE_CENTRE[0] * size, EYE_CENTRE[1] * size
        ex, ey = (lx + rx) / 2, (ly + ry) / 2
        return (a, b, ex - a * cu - b * cv, d, e, ey - d * cu - e * cv)


class FaceFinder:
    """dlib's face detector and 5-point landmarks, loaded once."""

    def __init__(self):
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")  # not imported: its __init__ needs pkg_resources
        if spec is None:
            raise ImportError("face detection needs the face_recognition_models package")
        models = Path(spec.submodule_search_locations[0]) / "models"
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))

    def find(self, photo: Image.Image) -> list[Face]:
        """Faces left to right. Small photos are upsampled once so faces down to ~40 px are found."""
        gray = np.asarray(photo.convert("L"))
        upsample = 1 if max(gray.shape) < 1200 else 0
        faces = []
        for rect in self._detector(gray, upsample):
            points = [(p.x, p.y) for p in self._landmarks(gray, rect).parts()]
            # 5-point model: 0-1 the eye on the image's right, 2-3 the eye on its left, 4 the nose
            right = tuple(np.mean(points[0:2], axis=0).tolist())
            left = tuple(np.mean(points[2:4], axis=0).tolist())
            faces.append(Face((rect.left(), rect.top(), rect.right(), rect.bottom()), left, right))
        return sorted(faces, key=lambda face: face.box[0])


def select(faces: list[Face], which: str) -> list[Face]:
    """``largest``, ``all`` or a 0-based index into the faces ordered left to right."""
    if which == "all":
        return faces
    if which == "largest":
        return [max(faces, key=lambda face: face.area)]
    if which.isdigit() and int(which) < len(faces):
        return [faces[int(which)]]
    raise ValueError(f"--face {which!r}: expected largest, all or an index 0..{len(faces) - 1} (faces counted left to right)")


def parse_face_choice(which: str) -> str:
    if which in ("largest", "all") or which.isdigit():
        return which
    raise ValueError(f"--face {which!r}: expected largest, all or a face index (0 = leftmost)")


def load_photo(path: str | Path) -> Image.Image:
    """A photo upright (EXIF orientation applied), in L, LA, RGB or RGBA."""
    with Image.open(path) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
    if upright.mode in ("L", "LA", "RGB", "RGBA"):
        return upright
    return upright.convert("RGBA" if "A" in upright.getbands() or "transparency" in upright.info else "RGB")


def is_face_crop(image: Image.Image) -> bool:
    return image.width <= CROP_LIMIT and image.height <= CROP_LIMIT


def crop(photo: Image.Image, face: Face, size: int = IMAGE_SIZE) -> np.ndarray:
    """The aligned size x size grayscale crop; sampled large, then reduced with antialiasing."""
    a, b, c, d, e, f = face.crop_to_photo(size)
    oversample = int(min(8, max(1, round(math.hypot(a, d)))))
    fine = photo.convert("L").transform(
        (size * oversample, size * oversample),
        Image.AFFINE,
        (a / oversample, b / oversample, c, d / oversample, e / oversample, f),
        resample=Image.BICUBIC,
    )
    return np.asarray(fine.resize((size, size), Image.LANCZOS))


def _feathered_mask(size: int) -> np.ndarray:
    cx, cy, rx, ry = (v * size for v in FACE_ELLIPSE)
    mask = Image.new("L", (size * 4, size * 4), 0)
    ImageDraw.Draw(mask).ellipse([(cx - rx) * 4, (cy - ry) * 4, (cx + rx) * 4, (cy + ry) * 4], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(size * 4 * 0.07))
    return np.asarray(mask.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255


def paste(photo: Image.Image, face: Face, original: np.ndarray, edited: np.ndarray) -> Image.Image:
    """The photo with the luminance change (edited - original crop) added under a feathered face mask."""
    size = original.shape[0]
    change = (edited.astype(np.float32) - original.astype(np.float32)) * _feathered_mask(size)
    a, b, c, d, e, f = face.crop_to_photo(size)
    corners = [(a * u + b * v + c, d * u + e * v + f) for u in (0, size) for v in (0, size)]
    left = max(0, math.floor(min(x for x, _ in corners)))
    top = max(0, math.floor(min(y for _, y in corners)))
    right = min(photo.width, math.ceil(max(x for x, _ in corners)))
    bottom = min(photo.height, math.ceil(max(y for _, y in corners)))
    if right <= left or bottom <= top:
        return photo.copy()
    # photo pixel (x, y) -> crop (u, v): the inverse of the similarity, offset to the region
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    x0, y0 = left - c, top - f
    region = Image.fromarray(change).transform(
        (right - left, bottom - top),
        Image.AFFINE,
        (ia, ib, ia * x0 + ib * y0, id_, ie, id_ * x0 + ie * y0),
        resample=Image.BICUBIC,
        fillcolor=0.0,
    )
    delta = np.asarray(region, dtype=np.float32)[..., None]
    pixels = np.array(photo)
    if pixels.ndim == 2:
        view = pixels[top:bottom, left:right, None]
    else:  # the luminance-carrying channels: L of LA, or all of R, G, B
        view = pixels[top:bottom, left:right, : 1 if photo.mode == "LA" else 3]
    updated = np.clip(np.rint(view.astype(np.float32) + delta), 0, 255).astype(np.uint8)
    touched = np.broadcast_to(np.abs(delta) >= 0.5, view.shape)
    view[touched] = updated[touched]  # untouched pixels keep their exact values
    return Image.fromarray(pixels)
