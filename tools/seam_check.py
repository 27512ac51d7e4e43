"""The seam score against a real seam, on real photos: every photo is edited to all 7 emotions at the
default settings of `emodiff edit` and pasted back two ways — as shipped, and the same paste cut
off along its mask's half-way contour at the photo's resolution (a real seam where the shipped
paste fades out). Both are scored by today's
seam score (`photo_evaluation.seam_score`) and by the former one (the 99.9th percentile of every
step of the change where the photo is flat, in the crop square's box), which could not tell the two
apart (README, "Seams"):

    python tools/seam_check.py ../shared/photos/biden.jpg ../shared/photos/obama.jpg [--model DIR]

Prints one row per photo and paste: the range of each score over the emotions whose edit changes
the photo.
"""

import argparse

import numpy as np
from PIL import Image
from scipy import ndimage

from emodiff.labels import EMOTIONS
from emodiff.photo_evaluation import FLAT, _luma, _steps, aligned_input, crop_region, seam_score
from emodiff.photos import PastePlan, Preparer, _to_photo, load_photo
from emodiff.pipeline import load_editor
from emodiff.settings import EditSettings


def former_score(original: Image.Image, edited: Image.Image, region: np.ndarray, margin: int = 3) -> float:
    """The seam score until d5c5f31: every step of the change where the photo is flat (and
    ``margin`` pixels from its edges) counted."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    before, after, region = _luma(original)[box], _luma(edited)[box], region[box]
    if np.array_equal(before, after):
        return 0.0
    aligned = aligned_input(before, after)
    step = np.minimum(_steps(after - before), _steps(after - aligned))
    flat = ~ndimage.binary_dilation(_steps(ndimage.uniform_filter(aligned, 3)) >= FLAT, iterations=margin) & region
    return float(np.percentile(step[flat], 99.9)) if flat.any() else 0.0


def cut_paste(plan: PastePlan, photo: Image.Image, edited: np.ndarray) -> Image.Image:
    """``edited`` pasted as shipped (``plan.paste``), kept only where the plan's mask, resampled to
    the photo, is at least one half: the photo's own pixels elsewhere."""
    left, top, right, bottom = plan.box
    half = (_to_photo(plan.mask.astype(np.float32), plan.face, plan.box) >= 0.5)[..., None]
    pixels, shipped = np.array(photo), np.asarray(plan.paste(photo, edited))
    region = pixels[top:bottom, left:right]
    pixels[top:bottom, left:right] = np.where(half if region.ndim == 3 else half[..., 0], shipped[top:bottom, left:right], region)
    return Image.fromarray(pixels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", help="colour or grey photos with a face")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    editor, prepare, targets = load_editor(args.model), Preparer("largest"), list(range(len(EMOTIONS)))
    print("| photo | paste | seam score | former score |\n|---|---|---|---|")
    for path in args.photos:
        photo = load_photo(path)
        prepared = prepare(photo)
        (shipped,), edits, _ = editor.edit_prepared([prepared], targets, EditSettings(), seed=args.seed)
        face = prepared.faces[0]
        plan, region = PastePlan.of(photo, face, prepared.crops[0], prepared.blend), crop_region(photo, face)
        for name, outputs in (("as shipped", shipped), ("cut at the mask's half-way contour", [cut_paste(plan, photo, e) for e in edits[0]])):
            changed = [out for out in outputs if not np.array_equal(np.asarray(out), np.asarray(photo))]
            scores = [seam_score(photo, out, region) for out in changed]
            former = [former_score(photo, out, region) for out in changed]
            print(f"| {path} | {name} ({len(changed)} of 7 change it) | {min(scores):.1f}–{max(scores):.1f} | {min(former):.1f}–{max(former):.1f} |")


if __name__ == "__main__":
    main()
