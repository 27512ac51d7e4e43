"""Measuring photo edits the way a person sees the photo, not the 48x48 crop:

- identity: dlib's face descriptor of the face in the edited photo against the input's, both at the
  photo's own resolution (same person below 0.6);
- emotion: the judge's verdict on the face re-cropped from the edited photo (per-target F1), and
  on the 48x48 edits before they were pasted back: what the paste-back keeps of the edit;
- containment: pixels changed outside the face's crop square (must be 0);
- seam: the 99th percentile of the steps in the difference map where the edit ends — between a
  pixel it changed and pixels it left as they were — where the photo is flat, after the input has
  been aligned to the edit by dense optical flow. A plain gradient of the difference cannot tell a
  seam from a feature that moved: a warp carries the photo's edges into places that were flat
  (teeth where there was lip), and a difference map steps there. Aligned first, a moved feature
  leaves no difference; a step in brightness where the photo has no edge (a pasted-on patch)
  cannot be explained by moving pixels, and stays. A step counts where it shows both before and
  after alignment, so the alignment's own resampling noise does not count either. Nor does a step
  inside the change: a strong expression change, upsampled 6-20 times from 48x48, rises by several
  grey levels per photo pixel wherever it draws a fold or a tooth; when every step of the change
  counted, those filled the top percentile, and a change cut off along a contour (a real seam)
  hardly moved it. A change that fades out ends in steps of its rounding to whole grey levels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .identity import IDENTITY_THRESHOLD
from .labels import EMOTIONS
from .settings import BLENDS

FLAT = 3.0  # grey levels per pixel: below this (after a light blur) the input has no edge
SEAM_PERCENTILE = 99  # of the steps where an edit ends: a seam is a line of them, a stray pixel is not
UNTOUCHED_REACH = 3  # pixels: a seam's untouched side is left as it was this far back from the step, and either side of it


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def _steps(values: np.ndarray) -> np.ndarray:
    """Per pixel, the largest difference to its right or lower neighbour: a step of N levels reads N."""
    steps = np.zeros_like(values)
    steps[:, :-1] = np.abs(np.diff(values, axis=1))
    steps[:-1, :] = np.maximum(steps[:-1, :], np.abs(np.diff(values, axis=0)))
    return steps


def aligned_input(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``before`` (float grey) moved onto ``after`` by OpenCV's DIS optical flow: what the edit
    would be if it had only moved the photo's pixels."""
    import cv2

    to_u8 = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(to_u8(after), to_u8(before), None)
    ys, xs = np.mgrid[0 : before.shape[0], 0 : before.shape[1]].astype(np.float32)
    return cv2.remap(before.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def seam_score(original: Image.Image, edited: Image.Image, region: np.ndarray | None = None) -> float:
    """How large a step the change makes where it ends and the photo is flat, once moved pixels are
    accounted for (see the module docstring), in grey levels per pixel; measured in ``region``'s
    bounding box. An unedited photo scores 0, a change that fades out its rounding to whole grey
    levels (1)."""
    from scipy import ndimage

    before, after = _luma(original), _luma(edited)
    if region is not None:
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        if not len(rows):
            return 0.0
        # grown a little, so a change that runs to the region's border and stops there is seen stepping
        grow = UNTOUCHED_REACH + 1
        box = np.s_[max(0, rows[0] - grow) : rows[-1] + 1 + grow, max(0, cols[0] - grow) : cols[-1] + 1 + grow]
        before, after = before[box], after[box]
        region = ndimage.binary_dilation(region[box], iterations=grow)
    if np.array_equal(before, after):
        return 0.0
    aligned = aligned_input(before, after)
    plain, moved = after - before, after - aligned
    # left as it was: changed by under a grey level, or only moved
    untouched = np.minimum(np.abs(plain), np.abs(moved)) < 1
    # the input's own edges alone are left out: leaving out 3 pixels around each too (until
    # 2026-12-07) left almost nothing to look at on a small or grainy face (README "Seams")
    flat = _steps(ndimage.uniform_filter(aligned, 3)) < FLAT
    if region is not None:
        flat &= region
    ends = []
    for axis in (0, 1):
        # between pixel i and i + 1 along the axis: i + 1 changed and i untouched over a window reaching
        # back from it, or the other way round; a change that crosses zero inside the expression has
        # changed pixels beside it, and does not end there
        window = [2 * UNTOUCHED_REACH + 1] * 2
        window[axis] = UNTOUCHED_REACH + 1
        centre = window[axis] // 2  # where scipy centres the window along the axis; origin moves it back
        shift = [0, 0]
        shift[axis] = UNTOUCHED_REACH - centre  # covering i - UNTOUCHED_REACH .. i
        behind = ndimage.minimum_filter(untouched, size=window, origin=shift, mode="nearest")
        shift[axis] = -centre  # covering i .. i + UNTOUCHED_REACH
        ahead = ndimage.minimum_filter(untouched, size=window, origin=shift, mode="nearest")
        first, second = [slice(None)] * 2, [slice(None)] * 2
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        first, second = tuple(first), tuple(second)
        end = ((behind[first] & ~untouched[second]) | (ahead[second] & ~untouched[first])) & flat[first] & flat[second]
        ends.append(np.minimum(np.abs(np.diff(plain, axis=axis)), np.abs(np.diff(moved, axis=axis)))[end])
    ends = np.concatenate(ends)
    return float(np.percentile(ends, SEAM_PERCENTILE)) if len(ends) else 0.0


def crop_region(photo: Image.Image, face) -> np.ndarray:
    """A boolean mask of the photo pixels inside the face's crop square (where an edit may act)."""
    ys, xs = np.mgrid[0 : photo.height, 0 : photo.width]
    return face.inside_crop(xs, ys)


def _differs(original: Image.Image, edited: Image.Image) -> np.ndarray:
    """Per pixel: does the edit differ from the original in any channel."""
    a, b = np.asarray(original), np.asarray(edited)
    return a != b if a.ndim == 2 else np.any(a != b, axis=-1)


def outside_changes(original: Image.Image, edited: Image.Image, faces) -> int:
    """Pixels that differ anywhere outside every edited face's crop square."""
    inside = np.zeros((original.height, original.width), bool)
    for face in faces:
        inside |= crop_region(original, face)
    return int((_differs(original, edited) & ~inside).sum())


class PhotoIdentity:
    """dlib's face-recognition descriptor of a face in a photo, at the photo's resolution."""

    def __init__(self):
        import importlib.util

        import dlib

        models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
        self._landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._network = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._dlib = dlib

    def descriptor(self, photo: Image.Image, face) -> np.ndarray:
        rgb = np.asarray(photo.convert("RGB"))
        rect = self._dlib.rectangle(*face.box)
        return np.asarray(self._network.compute_face_descriptor(rgb, self._landmarks(rgb, rect)))


@dataclass
class PhotoEvaluation:
    rows: list[dict]  # one per photo and target
    metrics: dict
    sheet: Image.Image


ORIGINAL = "as it is"  # the ``copy`` of a photo measured unchanged
OCCLUDED = "occluded"  # the copy with a bar across the mouth, which the edit must leave alone
VARIANTS = ("rotated", "small", "grey", OCCLUDED)
TURN_DEGREES = 20.0
SMALL_FACE = 60  # pixels across the detected face box in the "small" copy
BAR = (0.5, 0.74, 0.62, 0.13)  # the occluding bar: centre x, y, width, height, as fractions of the crop side


def photo_variants(photo: Image.Image, face) -> dict[str, Image.Image]:
    """Harder copies of a photo for measuring the photo path beyond frontal, well-lit, big faces:
    turned 20° about the face, shrunk until the face is about 60 pixels wide, grayscale, and with a
    dark bar drawn across the mouth (a microphone or a hand; the edit must leave it alone)."""
    from PIL import ImageDraw

    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    scale = SMALL_FACE / max(1, face.box[2] - face.box[0])
    small = photo.resize((max(16, round(photo.width * scale)), max(16, round(photo.height * scale))), Image.LANCZOS)
    occluded = photo.copy()
    ImageDraw.Draw(occluded).polygon(bar_polygon(face), fill=(40,) * len(photo.getbands()))
    return {
        "rotated": photo.rotate(TURN_DEGREES, resample=Image.BICUBIC, center=(cx, cy)),
        "small": small,
        "grey": photo.convert("L"),
        OCCLUDED: occluded,
    }


def bar_polygon(face) -> list[tuple[float, float]]:
    """The occluding bar's corners in photo pixels, placed across the mouth through the face's crop frame."""
    from .data import IMAGE_SIZE

    a, b, c, d, e, f = face.crop_to_photo(IMAGE_SIZE)
    x, y, w, h = (v * IMAGE_SIZE for v in BAR)
    corners = [(x - w / 2, y - h / 2), (x + w / 2, y - h / 2), (x + w / 2, y + h / 2), (x - w / 2, y + h / 2)]
    return [(a * u + b * v + c, d * u + e * v + f) for u, v in corners]


def _polygon_mask(photo: Image.Image, polygon) -> np.ndarray:
    from PIL import ImageDraw

    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    return np.asarray(mask) > 0


def _changed_fraction(original: Image.Image, edited: Image.Image, where: np.ndarray) -> float:
    """The fraction of the pixels in ``where`` that the edit changed at all."""
    return float(_differs(original, edited)[where].mean())


def _emotion(rows: list[dict], verdict: str) -> dict:
    """Per-target F1 and macro F1 of one judge's verdicts (``verdict``: the rows' field) on ``rows``."""
    from .evaluation import emotion_scores

    return emotion_scores(np.array([EMOTIONS.index(r["target"]) for r in rows]), np.array([EMOTIONS.index(r[verdict]) for r in rows]))


def _copy_metrics(rows: list[dict]) -> dict:
    """What one kind of copy (the photo as it is, or one of ``photo_variants``) scores."""
    return {
        "edits": len(rows),
        "macro_f1": _emotion(rows, "judged")["macro_f1"],
        "macro_f1_crops": _emotion(rows, "judged_crop")["macro_f1"],
        "identity_kept": float(np.mean([r["identity_distance"] < IDENTITY_THRESHOLD for r in rows])),
        "seam_median": float(np.median([r["seam"] for r in rows])),
    }


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_photos(pipeline, paths: list[Path], settings, judges: list, seed: int = 0, variants: bool = False, blend: str = BLENDS[0]) -> PhotoEvaluation:
    """Edit the largest face of every photo (and, with ``variants``, of its harder copies,
    ``photo_variants``) to all 7 emotions, blended back under ``blend``'s mask, and measure each
    edited photo. ``judges``: the judge, and optionally a second one that only reports. A copy in
    which no face is found is counted (``faces_missed``), not measured."""
    from .assets import face_box, view
    from .evaluation import judge_labels
    from .grid import labelled_grid
    from .photos import NoFaceError, Preparer, crop, load_photo

    prepare, identity = Preparer("largest", blend=blend), PhotoIdentity()
    two_judges = len(judges) > 1
    targets = list(range(len(EMOTIONS)))
    rows, sheet_rows, names, missed = [], [], [], []
    for path in paths:
        original = load_photo(path)
        inputs, bar = [(Path(path).name, original, ORIGINAL)], None
        if variants:
            found = prepare(original).faces[0]
            inputs += [(f"{Path(path).name} ({kind})", image, kind) for kind, image in photo_variants(original, found).items()]
            bar = _polygon_mask(original, bar_polygon(found))
        for name, photo, copy in inputs:
            try:
                prepared = prepare(photo)
            except NoFaceError:
                missed.append(name)
                continue
            (outputs,), edits, _ = pipeline.edit_prepared([prepared], targets, settings, seed=seed)
            face = prepared.faces[0]
            region = crop_region(photo, face)
            reference = identity.descriptor(photo, face)
            recropped = np.stack([crop(edited, face) for edited in outputs])
            verdicts = [judge_labels(judge, recropped) for judge in judges]
            on_crops = [judge_labels(judge, edits[0]) for judge in judges]  # the 48x48 edits themselves, before the paste-back
            for i, (target, edited) in enumerate(zip(targets, outputs)):
                rows.append({
                    "photo": name, "copy": copy, "target": EMOTIONS[target], "judged": EMOTIONS[verdicts[0][i]],
                    "judged_crop": EMOTIONS[on_crops[0][i]],
                    "judged_second": EMOTIONS[verdicts[1][i]] if two_judges else None,
                    "judged_crop_second": EMOTIONS[on_crops[1][i]] if two_judges else None,
                    "identity_distance": float(np.linalg.norm(identity.descriptor(edited, face) - reference)),
                    "seam": seam_score(photo, edited, region), "outside_changed": outside_changes(photo, edited, [face]),
                    "occluder_changed": _changed_fraction(photo, edited, bar) if copy == OCCLUDED else None,
                })  # fmt: skip
            box = face_box(prepared, photo)
            sheet_rows.append([view(photo, box)] + [view(edited, box) for edited in outputs])
            names.append(Path(name).stem if name == Path(path).name else name)
    if not rows:
        raise ValueError(f"no face found in any photo: {', '.join(missed)}")
    distances = np.array([r["identity_distance"] for r in rows])
    emotion, crops = _emotion(rows, "judged"), _emotion(rows, "judged_crop")
    second = _emotion(rows, "judged_second") if two_judges else None
    uncovered = [r for r in rows if r["copy"] != OCCLUDED]
    metrics = {
        "photos": len(rows) // len(targets),
        "edits": len(rows),
        "faces_missed": missed,
        "macro_f1": emotion["macro_f1"],
        "f1": emotion["f1"],
        "macro_f1_crops": crops["macro_f1"],  # the judge on the 48x48 edits: what the paste-back starts from
        "macro_f1_second": second and second["macro_f1"],
        "f1_second": second and second["f1"],
        # the second judge's verdict on the same two: whether the paste-back thins the change, or one judge's reading of it
        "macro_f1_crops_second": second and _emotion(rows, "judged_crop_second")["macro_f1"],
        "identity_kept": float(np.mean(distances < IDENTITY_THRESHOLD)),
        "identity_median": float(np.median(distances)),
        "seam_median": float(np.median([r["seam"] for r in rows])),
        "seam_max": float(max(r["seam"] for r in rows)),
        "outside_changed": int(sum(r["outside_changed"] for r in rows)),
        "occluder_changed": _mean_or_none([r["occluder_changed"] for r in rows if r["occluder_changed"] is not None]),
        # the bar hides the mouth from the judge on the photo but not on the edit of the filled-in
        # crop, so the two are comparable on the copies nothing covers
        "macro_f1_uncovered": _emotion(uncovered, "judged")["macro_f1"] if uncovered else None,
        "macro_f1_crops_uncovered": _emotion(uncovered, "judged_crop")["macro_f1"] if uncovered else None,
        "macro_f1_uncovered_second": _emotion(uncovered, "judged_second")["macro_f1"] if uncovered and second else None,
        "macro_f1_crops_uncovered_second": _emotion(uncovered, "judged_crop_second")["macro_f1"] if uncovered and second else None,
        "by_copy": {copy: _copy_metrics([r for r in rows if r["copy"] == copy]) for copy in dict.fromkeys(r["copy"] for r in rows)},
    }
    sheet = labelled_grid(np.asarray(sheet_rows), names, ["input", *EMOTIONS], scale=1)
    return PhotoEvaluation(rows, metrics, sheet)


def write_photo_report(evaluation: PhotoEvaluation, out: Path, command: str | None = None) -> None:
    from .files import atomic_write, save_image

    m = evaluation.metrics
    lines = ["# Photo edits", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"{m['photos']} photos, each edited to all 7 emotions ({m['edits']} edited photos)"
        + (f"; no face found in {', '.join(m['faces_missed'])}." if m.get("faces_missed") else "."),
        "",
        "| photo | target | judged | judged, second judge | identity distance | seam | pixels changed outside the face |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['photo']} | {r['target']} | {r['judged']} | {r.get('judged_second') or '–'} | {r['identity_distance']:.3f} | {r['seam']:.2f} | {r['outside_changed']} |"
        for r in evaluation.rows
    ]
    lines += [
        "",
        f"Macro F1 of the judge on the re-cropped faces **{m['macro_f1']:.3f}**"
        + (f" (second judge, which only reports: {m['macro_f1_second']:.3f})" if m.get("macro_f1_second") is not None else "")
        + f", on the 48x48 edits before they were pasted back {m['macro_f1_crops']:.3f}"
        + (f" (second judge {m['macro_f1_crops_second']:.3f})" if m.get("macro_f1_crops_second") is not None else "")
        + f"; identity kept (distance < {IDENTITY_THRESHOLD}, "
        f"at the photo's resolution) **{m['identity_kept']:.0%}** (median {m['identity_median']:.3f}); seam score median "
        f"{m['seam_median']:.2f}, largest {m['seam_max']:.2f} grey levels per pixel (an unedited photo scores 0); pixels "
        f"changed outside the faces: {m['outside_changed']}."
        + (f" Pixels of the bar across the mouth changed: {m['occluder_changed']:.1%} (the edit should leave it alone)." if m.get("occluder_changed") is not None else ""),
        "",
        "| target | " + " | ".join(EMOTIONS) + " |",
        "|---|" + "---|" * len(EMOTIONS),
        "| F1 | " + " | ".join(f"{m['f1'][e]:.2f}" for e in EMOTIONS) + " |",
    ]
    if m.get("f1_second"):
        lines.append("| F1, second judge | " + " | ".join(f"{m['f1_second'][e]:.2f}" for e in EMOTIONS) + " |")
    if len(m["by_copy"]) > 1 and m["macro_f1_uncovered"] is not None:
        lines += [
            "",
            f"On the photos nothing covers (every copy but the occluded one) the judge reads the re-cropped faces at "
            f"{m['macro_f1_uncovered']:.3f} against {m['macro_f1_crops_uncovered']:.3f} on their 48x48 edits"
            + (f" (the second judge {m['macro_f1_uncovered_second']:.3f} against {m['macro_f1_crops_uncovered_second']:.3f})"
               if m.get("macro_f1_uncovered_second") is not None else "")
            + ". The occluded copy is edited with the bar filled in, and the bar stays on the photo, over the mouth the judge reads.",
            "",
            "| copy | edits | macro F1 | on the 48x48 edits | identity kept | seam median |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {copy} | {c['edits']} | {c['macro_f1']:.3f} | {c['macro_f1_crops']:.3f} | {c['identity_kept']:.0%} | {c['seam_median']:.2f} |"
            for copy, c in m["by_copy"].items()
        ]
    lines += [
        "",
        "| photo | judged as the target | identity kept | seam median |",
        "|---|---|---|---|",
    ]
    for photo in dict.fromkeys(r["photo"] for r in evaluation.rows):
        mine = [r for r in evaluation.rows if r["photo"] == photo]
        right = sum(r["target"] == r["judged"] for r in mine)
        kept = np.mean([r["identity_distance"] < IDENTITY_THRESHOLD for r in mine])
        lines.append(f"| {photo} | {right} of {len(mine)} | {kept:.0%} | {np.median([r['seam'] for r in mine]):.2f} |")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.md", lambda t: t.write_text("\n".join(lines) + "\n"))
    atomic_write(out / "metrics.json", lambda t: t.write_text(json.dumps({"metrics": m, "rows": evaluation.rows}, indent=2)))
    save_image(evaluation.sheet, out / "contact_sheet.jpg", {"quality": 85})  # a figure for docs: small in the repository
