"""Real photos: detection, alignment, pasting back, and every format the CLI takes."""

import itertools

import numpy as np
import pytest
from PIL import Image

from emodiff import photos as face_ops
from emodiff.cli import main
from emodiff.labels import EMOTIONS


@pytest.fixture(scope="module")
def photo(photo_path):
    return face_ops.load_photo(photo_path)


def _edit(model_dir, out, *args):
    return main(["edit", *map(str, args), "--out", str(out), "--model", str(model_dir), "--steps", "3", "--from", "sad"])


def _outside_face_unchanged(original: Image.Image, edited: Image.Image, face: face_ops.Face) -> bool:
    """Pixels well away from the face box are bit-identical."""
    a, b = np.asarray(original), np.asarray(edited)
    left, top, right, bottom = face.box
    pad = 2 * (right - left)
    mask = np.ones(a.shape[:2], bool)
    mask[max(0, top - pad) : bottom + pad, max(0, left - pad) : right + pad] = False
    return np.array_equal(a[mask], b[mask])


def test_detects_and_aligns_the_face_like_fer(photo, finder):
    faces = finder.find(photo)
    assert len(faces) == 1
    (lx, ly), (rx, ry) = faces[0].left_eye, faces[0].right_eye
    assert lx < rx and abs(ly - ry) < 10
    crop = face_ops.crop(photo, faces[0])
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    # the aligned crop puts the eyes where FER-2013 has them: check by re-detecting on the crop
    a, b, c, d, e, f = faces[0].crop_to_photo(48)
    u = (np.linalg.inv([[a, b], [d, e]]) @ (np.array([lx, ly]) - [c, f])) / 48
    np.testing.assert_allclose(u, [face_ops.EYE_CENTRE[0] - face_ops.EYE_DISTANCE / 2, face_ops.EYE_CENTRE[1]], atol=0.02)


def test_paste_changes_only_luminance_inside_the_face(photo, finder):
    face = finder.find(photo)[0]
    crop = face_ops.crop(photo, face)
    darker = np.clip(crop.astype(int) - 40, 0, 255).astype(np.uint8)
    pasted = face_ops.paste(photo, face, crop, darker)
    assert pasted.size == photo.size and pasted.mode == photo.mode
    assert _outside_face_unchanged(photo, pasted, face)
    before = np.asarray(photo.convert("YCbCr"), dtype=float)
    after = np.asarray(pasted.convert("YCbCr"), dtype=float)
    changed = np.abs(after[..., 0] - before[..., 0]) > 5
    assert changed.sum() > 500  # the face got darker
    assert np.abs(after[..., 1:] - before[..., 1:])[changed].mean() < 1.0  # chroma kept (up to rounding/clipping)


@pytest.mark.parametrize("blend", face_ops.BLENDS)
def test_a_face_planned_once_pastes_every_target_as_pasting_each_alone_does(photo, finder, blend):
    """Prepared.render works out a face's region, mask and occluder once for all its targets: the
    photos it makes are the ones pasting each edit on its own makes, to the byte."""
    from emodiff.photo_evaluation import photo_variants

    occluded = photo_variants(photo, finder.find(photo)[0])["occluded"]  # with an occluder, so its mask is planned too
    prepared = face_ops.Preparer(blend=blend)(occluded)
    crop, face = prepared.crops[0], prepared.faces[0]
    edits = np.stack([np.clip(crop.astype(int) + shift, 0, 255).astype(np.uint8) for shift in (-40, 25)])[None]
    rendered = prepared.render(edits)
    for edit, image in zip(edits[0], rendered):
        alone = face_ops.paste(occluded, face, crop, edit, blend)
        np.testing.assert_array_equal(np.asarray(image), np.asarray(alone))
        assert not np.array_equal(np.asarray(image), np.asarray(occluded))
    assert not np.array_equal(np.asarray(rendered[0]), np.asarray(rendered[1]))


def _variants(tmp_path, photo_path):
    base = Image.open(photo_path).convert("RGB").crop((0, 0, 512, 400))  # not square: a rotation would show
    rgba = base.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(tmp_path / "rgba.png")
    base.convert("L").save(tmp_path / "gray.jpg", quality=95)
    base.save(tmp_path / "photo.webp", quality=95)
    rotated = base.rotate(90, expand=True)  # stored sideways (turned left); EXIF says how to turn it back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: rotate 90 degrees clockwise to view
    rotated.save(tmp_path / "exif.jpg", quality=95, exif=exif)
    return {"rgba.png": ("RGBA", base.size), "gray.jpg": ("L", base.size), "photo.webp": ("RGB", base.size),
            "exif.jpg": ("RGB", base.size)}


def test_every_photo_format_and_mode_is_edited_at_its_size(model_dir, tmp_path, photo_path):
    expected = _variants(tmp_path, photo_path)
    out = tmp_path / "out"
    assert _edit(model_dir, out, *(tmp_path / name for name in expected), "--to", "happy,sad", "--crop") == 0
    for name, (mode, size) in expected.items():
        stem, suffix = name.rsplit(".", 1)
        for emotion in ("happy", "sad"):
            edited = Image.open(out / f"{stem}_{emotion}.{suffix}")
            assert edited.size == size and edited.mode == mode, name
        assert Image.open(out / f"{stem}_face0_happy.png").size == (48, 48)
    rgba = Image.open(out / "rgba_happy.png")
    assert np.all(np.asarray(rgba)[..., 3] == 200)  # alpha untouched


def test_png_photo_keeps_colours_outside_the_face(model_dir, tmp_path, photo, finder):
    source = tmp_path / "exact.png"
    photo.save(source)
    out = tmp_path / "out"
    assert _edit(model_dir, out, source, "--to", "angry") == 0
    assert _outside_face_unchanged(photo, Image.open(out / "exact_angry.png"), finder.find(photo)[0])


def test_photo_without_a_face_is_an_error_naming_it_and_others_still_edited(model_dir, tmp_path, capsys, photo_path):
    Image.new("RGB", (300, 200), (120, 160, 200)).save(tmp_path / "sky.jpg")
    out = tmp_path / "out"
    status = _edit(model_dir, out, tmp_path / "sky.jpg", photo_path, "--to", "fear")
    assert status != 0
    err = capsys.readouterr().err
    assert "sky.jpg" in err and "no face" in err
    assert (out / "astronaut_fear.jpg").exists() and not (out / "sky_fear.jpg").exists()


@pytest.fixture
def two_faces(tmp_path, photo):
    """The astronaut twice, the right copy smaller."""
    canvas = Image.new("RGB", (900, 520), (90, 90, 90))
    canvas.paste(photo.convert("RGB"), (0, 0))
    canvas.paste(photo.convert("RGB").resize((380, 380)), (515, 60))
    path = tmp_path / "pair.jpg"
    canvas.save(path, quality=95)
    return path


@pytest.mark.parametrize("choice, edited_faces", [("all", [0, 1]), ("largest", [0]), ("0", [0]), ("1", [1])])
def test_multi_face_photo_with_each_face_choice(model_dir, tmp_path, two_faces, finder, choice, edited_faces):
    original = face_ops.load_photo(two_faces)
    found = finder.find(original)
    assert len(found) == 2
    out = tmp_path / "out"
    assert _edit(model_dir, out, two_faces, "--to", "surprise", "--face", choice, "--crop") == 0
    crops = sorted(p.name for p in out.glob("pair_face?.png"))
    assert crops == [f"pair_face{i}.png" for i in range(len(edited_faces))]
    edited = np.asarray(Image.open(out / "pair_surprise.jpg"), dtype=int)
    reference = np.asarray(Image.open(two_faces), dtype=int)  # same JPEG decode: unedited faces match closely
    for index, face in enumerate(found):
        left, top, right, bottom = face.box
        region = np.abs(edited[top:bottom, left:right] - reference[top:bottom, left:right]).mean()
        assert (region > 1.0) == (index in edited_faces), (choice, index, region)


def test_the_largest_face_is_a_face_the_detector_is_sure_of_not_a_larger_badge(photo, finder):
    """Scanned at 3x, the astronaut's mission patch is found as a face larger than hers, at a score
    near zero: ``largest`` still edits her; ``all`` lists both, as the detector found them."""
    larger = photo.resize((photo.width * 3, photo.height * 3), Image.BICUBIC)
    found = finder.find(larger)
    face = min(found, key=lambda f: f.box[1])  # hers is above the patch
    badge = max(found, key=lambda f: f.box[1])
    assert len(found) == 2 and badge.area > face.area and badge.score < 0.1 * face.score
    assert face_ops.select(found, "largest") == [face]
    assert face_ops.select(found, "all") == found
    assert face_ops.Preparer("largest")(larger).faces == [face]


def test_bad_face_choice_is_refused_before_work(tmp_path, capsys, photo_path):
    assert main(["edit", str(photo_path), "--to", "happy", "--out", str(tmp_path / "o"), "--face", "middle"]) == 2
    assert "--face" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_uniform_change_fades_to_nothing_inside_the_crop_with_no_step():
    """The worst case for a seam: every pixel of the crop changed by the same amount. The change
    pasted into a smooth photo must fall to zero inside the crop, without a step anywhere."""
    yy, xx = np.mgrid[0:600, 0:600]
    photo = Image.fromarray(((xx + yy) / 1200 * 120 + 60).astype(np.uint8)).convert("RGB")
    face = face_ops.Face((200, 200, 400, 400), left_eye=(245.0, 260.0), right_eye=(355.0, 260.0))
    crop = face_ops.crop(photo, face)
    pasted = face_ops.paste(photo, face, crop, np.clip(crop.astype(int) + 40, 0, 255).astype(np.uint8))
    change = np.asarray(pasted, dtype=float)[..., 0] - np.asarray(photo, dtype=float)[..., 0]
    assert change.max() > 30  # the middle of the face took the change
    inside = face.inside_crop(xx, yy)
    assert inside.sum() > 250**2 and np.all(change[~inside] == 0)  # nothing outside the crop square
    step = max(np.abs(np.diff(change, axis=0)).max(), np.abs(np.diff(change, axis=1)).max())
    assert step <= 0.1 * change.max(), step  # a fade: no pixel-to-pixel step over a tenth of the change (it was all of it)


def test_poisson_keeps_the_steps_of_a_change_inside_its_region_and_lets_an_offset_fade_out():
    """What ``poisson_change`` is for: a change's own steps arrive whole inside the region, and what
    stands still at the region's edge (an offset of the whole face) spreads out smoothly past it
    instead of being cut off there."""
    yy, xx = np.mgrid[0:192, 0:192]
    bump = 30 * np.exp(-((xx - 96) ** 2 + (yy - 90) ** 2) / (2 * 15.0**2))
    region = (np.abs(xx - 96) < 60) & (np.abs(yy - 96) < 60)
    np.testing.assert_allclose(face_ops.poisson_change(bump, region), bump, atol=0.05)  # nothing to take away
    offset = face_ops.poisson_change((bump + 20) * region, region)  # cut at the region's edge by 20 grey levels
    assert max(np.abs(np.diff(offset, axis=0)).max(), np.abs(np.diff(offset, axis=1)).max()) < 2.5  # the bump's own slope: no step
    relief = offset[90, 96] - offset[90, 50]  # the bump against the region's inside, away from it
    assert abs(relief - (bump[90, 96] - bump[90, 50])) < 1.0
    assert np.all(offset[[0, -1]] == 0) and np.all(offset[:, [0, -1]] == 0)


def test_poisson_region_fades_the_change_in_on_a_small_face_and_leaves_a_large_one_as_it_was(photo, finder):
    """On the 60-pixel copies of docs/photos an edit's texture that began just inside the region
    stepped up by as much as 5.5 grey levels where the change began (until 2026-12-07): there a crop
    pixel is little more than a photo pixel. ``poisson_region`` asks the change's steps to fade in
    over POISSON_FADE photo pixels and to rise no faster than POISSON_SLOPE a photo pixel there,
    while the rest of the face keeps its relief; on a face whose crop pixel spans 20 photo pixels the
    region is the plain one it was."""
    import dataclasses

    import cv2
    from scipy import ndimage

    from emodiff.photo_evaluation import photo_variants

    small = photo_variants(photo, finder.find(photo)[0])["small"]
    face = finder.find(small)[0]
    region, largest_step = face_ops.poisson_region(face, 48)
    photo_pixel = face.pixel_span(region.shape[0])  # photo pixels a grid pixel spans
    texture = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 1, (48, 48)), 1.5)
    change = cv2.resize((30 * texture / texture.std()).astype(np.float32), region.shape, interpolation=cv2.INTER_CUBIC)
    faded, plain = face_ops.poisson_change(change, region, largest_step), face_ops.poisson_change(change, region > 0)

    def steepest(field, where):  # grey levels a photo pixel
        steps = np.maximum(np.abs(np.diff(field, axis=0, append=field[-1:])), np.abs(np.diff(field, axis=1, append=field[:, -1:])))
        return steps[where].max() / photo_pixel

    where_it_begins = (region > 0) & (region <= 2 / face_ops.POISSON_FADE)  # the region's outer 2 photo pixels
    assert steepest(faded, where_it_begins) < min(0.25 * steepest(plain, where_it_begins), 4 * face_ops.POISSON_SLOPE)
    inner = region == 1
    assert inner.mean() > 0.3 and np.ptp(faded[inner]) > 0.8 * np.ptp(plain[inner])  # the face's own relief kept

    k = 21 / face.pixel_span(48)  # a crop pixel just over 20 photo pixels across
    grow = lambda point: (point[0] * k, point[1] * k)  # noqa: E731
    large = dataclasses.replace(face, box=tuple(round(v * k) for v in face.box), left_eye=grow(face.left_eye),
                                right_eye=grow(face.right_eye), landmarks=tuple(map(grow, face.landmarks)))  # fmt: skip
    region, largest_step = face_ops.poisson_region(large, 48)
    assert set(np.unique(region)) == {0.0, 1.0} and np.isinf(largest_step[region == 1]).all()


def test_poisson_blend_carries_a_feature_whole_but_not_an_offset_of_the_face_and_ends_without_a_step(photo, finder):
    """``--blend poisson`` on a photo: a dark mouth the edit draws arrives at its full depth, a
    brightening of the whole face does not (the landmark mask carries it onto the cheeks), the
    change ends without a step, and nothing outside the crop square changes."""
    from emodiff.photo_evaluation import crop_region, seam_score

    face = finder.find(photo)[0]
    points = np.asarray(face.landmarks, dtype=float)
    flat = Image.new("RGB", photo.size, (128, 128, 128))
    crop = face_ops.crop(flat, face)
    u, v = face.to_crop(*points[48:68].mean(0))
    yy, xx = np.mgrid[0:48, 0:48]
    mouth = -40 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 3.0**2))
    edited = np.clip(crop + 10 + mouth, 0, 255).round().astype(np.uint8)
    photos = {blend: face_ops.paste(flat, face, crop, edited, blend=blend) for blend in ("poisson", "landmarks")}
    pasted = {blend: np.asarray(image, dtype=float)[..., 0] - 128 for blend, image in photos.items()}
    at = lambda change, point: change[int(round(point[1])), int(round(point[0]))]  # noqa: E731
    mouth_at, cheek = points[48:68].mean(0), (points[31] + points[2]) / 2  # the cheek between nose and jaw
    assert at(pasted["poisson"], mouth_at) <= -35
    assert at(pasted["landmarks"], cheek) >= 8 and abs(at(pasted["poisson"], cheek)) <= 3
    change = pasted["poisson"]
    assert seam_score(flat, photos["poisson"], crop_region(flat, face)) <= 1.0  # where the change ends: a fade's rounding, no step
    rows, cols = np.mgrid[0 : photo.height, 0 : photo.width]
    assert np.all(change[~face.inside_crop(cols, rows)] == 0)


def test_seam_score_sees_the_crop_pasted_on_without_a_fade_but_not_a_faded_or_poisson_paste():
    """Issue #19's hard edge: a change carried to the crop square's border steps there. The score
    must see it on a photo, and see nothing where the landmark mask fades the same change out or
    the Poisson paste (the default) spreads it out."""
    import dataclasses

    from emodiff.photo_evaluation import crop_region, seam_score

    yy, xx = np.mgrid[0:600, 0:600]
    photo = Image.fromarray(((xx + yy) / 1200 * 120 + 60).astype(np.uint8)).convert("RGB")
    face = face_ops.Face((200, 200, 400, 400), left_eye=(245.0, 260.0), right_eye=(355.0, 260.0))
    crop = face_ops.crop(photo, face)
    edited = np.clip(crop.astype(int) + 40, 0, 255).astype(np.uint8)
    plan = face_ops.PastePlan.of(photo, face, crop, blend="landmarks")
    region = crop_region(photo, face)
    assert seam_score(photo, plan.paste(photo, edited), region) <= 1.0
    assert seam_score(photo, face_ops.paste(photo, face, crop, edited), region) <= 1.0
    assert seam_score(photo, dataclasses.replace(plan, mask=np.ones_like(plan.mask)).paste(photo, edited), region) >= 15


def test_the_landmark_mask_covers_the_expression_not_the_jaw_and_fades_with_no_step(photo, finder):
    """A uniform change pasted under the face's own landmark mask (onto a flat grey copy of the photo,
    so the change is the mask itself): full on mouth, eyes and brows, nothing on the jaw's outline,
    above the forehead or outside the crop, and no step anywhere."""
    face = finder.find(photo)[0]
    assert face.landmarks is not None and len(face.landmarks) == 68
    flat = Image.new("RGB", photo.size, (128, 128, 128))
    crop = face_ops.crop(flat, face)
    pasted = face_ops.paste(flat, face, crop, crop + 40, blend="landmarks")
    change = np.asarray(pasted, dtype=float)[..., 0] - 128
    at = lambda points: change[int(round(np.mean(points, axis=0)[1])), int(round(np.mean(points, axis=0)[0]))]  # noqa: E731
    points = np.asarray(face.landmarks)
    assert at(points[48:68]) >= 39 and at(points[36:42]) >= 39 and at(points[17:22]) >= 35  # mouth, an eye, a brow
    assert at(points[0:1]) <= 5 and at(points[16:17]) <= 5 and at(points[8:9]) <= 2  # the jaw line at the ears and chin: (almost) the photo's
    eye_distance = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    assert at(points[17:27] - [0, 1.2 * eye_distance]) <= 2  # high on the forehead
    yy, xx = np.mgrid[0 : photo.height, 0 : photo.width]
    assert np.all(change[~face.inside_crop(xx, yy)] == 0)
    step = max(np.abs(np.diff(change, axis=0)).max(), np.abs(np.diff(change, axis=1)).max())
    assert step <= 8, step  # faded in over a few crop pixels (2.5 photo pixels each here): never a fifth of the change at once
    ellipse = np.asarray(face_ops.paste(flat, face, crop, crop + 40, blend="ellipse"), dtype=float)[..., 0] - 128
    assert (ellipse > 1).sum() > 1.2 * (change > 1).sum()  # the old ellipse also changed jaw, cheeks and forehead


def test_a_face_without_landmarks_is_pasted_under_the_ellipse_and_a_bad_blend_is_refused(photo, finder):
    found = finder.find(photo)[0]
    bare = face_ops.Face(found.box, found.left_eye, found.right_eye)
    crop = face_ops.crop(photo, found)
    darker = np.clip(crop.astype(int) - 30, 0, 255).astype(np.uint8)
    assert face_ops.paste(photo, bare, crop, darker, "landmarks") == face_ops.paste(photo, found, crop, darker, blend="ellipse")
    assert face_ops.paste(photo, found, crop, darker, "landmarks") != face_ops.paste(photo, found, crop, darker, blend="ellipse")
    np.testing.assert_array_equal(face_ops.PastePlan.of(photo, bare, crop).mask, face_ops.ellipse_mask(48))  # the default's too
    with pytest.raises(ValueError, match="blend 'seamless'"):
        face_ops.paste(photo, found, crop, darker, blend="seamless")
    with pytest.raises(ValueError, match="--blend 'soft'"):
        face_ops.Preparer(blend="soft")


def test_an_occluder_across_the_mouth_is_kept_and_the_face_around_it_still_changes(photo, finder):
    from scipy import ndimage

    from emodiff.photo_evaluation import _polygon_mask, bar_polygon, photo_variants

    face = finder.find(photo)[0]
    occluded = photo_variants(photo, face)["occluded"]
    bar = _polygon_mask(photo, bar_polygon(face))
    # a darkening with a texture of its own: the Poisson paste (the default) carries an edit's steps, not an even offset
    texture = np.random.default_rng(0).integers(-40, -10, (48, 48))
    for (image, covered), blend in itertools.product(((photo, False), (occluded, True)), ("poisson", "landmarks")):
        found = finder.find(image)[0]
        crop = face_ops.crop(image, found)
        pasted = np.asarray(face_ops.paste(image, found, crop, np.clip(crop + texture, 0, 255).astype(np.uint8), blend), dtype=int)
        changed = np.any(pasted != np.asarray(image), axis=-1)
        inner = ndimage.binary_erosion(bar, iterations=2)  # the bar's pixels, its anti-aliased outline aside
        if covered:
            assert not changed[inner].any()  # the bar is left exactly as it was
        else:
            assert changed[inner].mean() > 0.9  # the same place on the bare face: the mouth takes the change
        eyes = np.asarray(found.landmarks)[36:48]
        y, x = int(eyes[:, 1].mean()), int(eyes[:, 0].mean())
        assert changed[y - 3 : y + 4, x - 3 : x + 4].mean() > 0.5  # around between the eyes: changed either way (a textured change crosses 0 here and there)
    assert face_ops.occluder_mask(photo, face, (0, 0, photo.width, photo.height)) is None  # nothing covers the bare face
    found = finder.find(occluded)[0]
    plan = face_ops.PastePlan.of(occluded, found, face_ops.crop(occluded, found))  # the default, poisson
    centre = np.argwhere(inner).mean(0)  # the bar's middle, (row, column) in the photo
    u, v = found.to_crop(np.array([centre[1] + 0.5]), np.array([centre[0] + 0.5]), plan.region.shape[0])
    assert not plan.region[int(v[0]), int(u[0])]  # the change's steps are not kept on the bar
    assert plan.region.mean() > 0.3  # but over the rest of the face


def test_the_change_fades_in_from_an_occluder_without_a_step(photo, finder):
    """A strong change beside the bar starts from nothing and grows without a step: until
    2026-12-07 it rose to whole in a few pixels, and the seam score read 3-6 beside docs/photos' bars.
    Under the landmark mask an even darkening; under the Poisson paste, which carries a change's
    steps rather than an even offset, a darkening that deepens toward the mouth."""
    from emodiff.photo_evaluation import crop_region, photo_variants, seam_score

    larger = photo.resize((photo.width * 2, photo.height * 2), Image.BICUBIC)  # a fade of a few pixels hides in the bar's edge on a small face
    occluded = photo_variants(larger, finder.find(larger)[0])["occluded"]
    found = finder.find(occluded)[0]
    crop = face_ops.crop(occluded, found)
    region = crop_region(occluded, found)
    even = np.clip(crop.astype(int) - 30, 0, 255).astype(np.uint8)
    assert seam_score(occluded, face_ops.paste(occluded, found, crop, even, "landmarks"), region) <= 2  # 5 before
    deepening = np.clip(crop - 40 * np.linspace(0, 1, 48)[:, None], 0, 255).astype(np.uint8)
    pasted = face_ops.paste(occluded, found, crop, deepening, "poisson")
    assert np.abs(np.asarray(pasted, dtype=int) - np.asarray(occluded, dtype=int)).max() >= 20  # the change arrived
    assert seam_score(occluded, pasted, region) <= 2


def test_an_occluder_is_filled_in_before_the_edit_and_a_bare_face_is_edited_as_it_is(photo, finder):
    """The model edits a face, not a bar: under the occluder the crop is filled from the skin around
    it (closer to the bare face than the bar is), elsewhere it is the crop exactly."""
    from emodiff.photo_evaluation import photo_variants

    face = finder.find(photo)[0]
    bare = face_ops.crop(photo, face).astype(int)
    occluded = photo_variants(photo, face)["occluded"]
    found = finder.find(occluded)[0]
    covered = face_ops.crop(occluded, found)
    filled = face_ops.fill_occluder(occluded, found, covered)
    hole = filled != covered
    assert 40 < hole.sum() < 0.25 * hole.size  # the bar's part of the crop, not the face
    assert np.abs(filled[hole] - bare[hole]).mean() < 0.5 * np.abs(covered[hole] - bare[hole]).mean()
    np.testing.assert_array_equal(face_ops.Preparer()(occluded).crops[0], filled)  # what every entry point edits
    np.testing.assert_array_equal(face_ops.Preparer(blend="ellipse")(occluded).crops[0], covered)  # the blend before #19
    np.testing.assert_array_equal(face_ops.fill_occluder(photo, face, bare.astype(np.uint8)), bare)  # nothing covers it


def test_a_photo_shows_a_change_under_its_mask_over_the_face_as_the_photo_keeps_it(photo, finder):
    """What the push reads (``Prepared.shown``, passed by ``edit_prepared`` to ``edit_faces``): the
    paste-back's reach — its mask, less what covers the face and what lies off the photo — over the
    crop as the photo keeps it, the occluder still on it; for a crop, nothing (the edit as it is)."""
    from emodiff.pipeline import FaceEditor
    from emodiff.photo_evaluation import photo_variants

    bare = face_ops.Preparer()(photo)
    shown = bare.shown()
    np.testing.assert_allclose(shown.reach[0], face_ops.blend_mask(bare.faces[0], 48), atol=1e-6)  # nothing covers it: the mask
    np.testing.assert_array_equal(shown.backdrop, bare.crops)
    occluded = face_ops.Preparer()(photo_variants(photo, bare.faces[0])["occluded"])
    shown, mask = occluded.shown(), face_ops.blend_mask(occluded.faces[0], 48)
    as_kept = face_ops.crop(occluded.image, occluded.faces[0])
    hole = occluded.crops[0] != as_kept  # where the bar was filled in for the model
    assert hole.sum() > 40 and mask[hole].mean() > 0.5  # the mask reaches the bar ...
    assert shown.reach[0][hole].max() < 0.05  # ... and the bar keeps it
    assert np.allclose(shown.reach[0][:18], mask[:18], atol=1e-6)  # the eyes and brows, far above the bar: the mask
    np.testing.assert_array_equal(shown.backdrop[0], as_kept)  # read over the bar, as the photo shows it
    small = face_ops.Preparer()(Image.fromarray(bare.crops[0]))
    assert small.shown() is None
    face = bare.faces[0]  # the photo cut just right of the left eye: what the change draws off the photo reaches nothing
    shift = round(face.left_eye[0] + 5)
    cut = photo.crop((shift, 0, photo.width, photo.height))
    moved = lambda x, y: (x - shift, y)  # noqa: E731
    left, top, right, bottom = face.box
    off = face_ops.Face((0, top, right - shift, bottom), moved(*face.left_eye), moved(*face.right_eye), tuple(moved(*p) for p in face.landmarks))
    a, b, c, *_ = off.crop_to_photo(48)
    v, u = np.mgrid[0:48, 0:48] + 0.5
    outside = a * u + b * v + c < -1  # crop pixels whose photo place lies left of the photo
    plan = face_ops.PastePlan.of(cut, off, bare.crops[0])
    assert plan.mask[outside].max() > 0.9 and plan.reach[outside].max() == 0
    np.testing.assert_allclose(plan.reach[~outside & (u > 30)], plan.mask[~outside & (u > 30)], atol=1e-6)

    class Keeps(FaceEditor):
        device = "cpu"

        def to(self, device="auto", bf16=None):
            return self

        def edit_faces(self, faces, targets, settings, source_labels=None, seed=0, shown=None):
            self.shown = shown
            return np.repeat(faces[:, None], len(targets), axis=1)

    editor = Keeps()
    editor.edit_prepared([occluded, small], [3], None)  # a photo's faces as the photo shows them, a crop whole
    np.testing.assert_array_equal(editor.shown.reach, np.stack([occluded.shown().reach[0], np.ones((48, 48), np.float32)]))
    np.testing.assert_array_equal(editor.shown.backdrop, np.stack([as_kept, small.crops[0]]))
    editor.edit_prepared([small], [3], None)
    assert editor.shown is None


def _square_face() -> face_ops.Face:
    """The face, without landmarks (the ellipse mask), whose crop is the square (60, 60)-(540, 540) of a 600x600 photo."""
    mid_x, mid_y = 60 + face_ops.EYE_CENTRE[0] * 480, 60 + face_ops.EYE_CENTRE[1] * 480
    half = face_ops.EYE_DISTANCE * 480 / 2
    return face_ops.Face((60, 60, 540, 540), (mid_x - half, mid_y), (mid_x + half, mid_y))


def _striped_face_photo():
    """A 600x600 photo whose face crop is the square (60, 60)-(540, 540), 10 photo pixels per crop
    pixel, with a dark bar across it carrying fine stripes (detail no 48x48 change can draw), and
    that face, without landmarks (so the ellipse mask applies)."""
    yy, xx = np.mgrid[0:600, 0:600]
    pixels = 90 + 0.15 * xx + 0.05 * yy
    bar = (yy >= 300) & (yy < 360) & (xx >= 200) & (xx < 400)
    pixels[bar] = 40 + 25 * (xx[bar] // 4 % 2)  # 4-pixel stripes
    return Image.fromarray(pixels.astype(np.uint8)).convert("RGB"), _square_face()


def test_warp_moves_a_feature_the_way_the_flow_says_carrying_the_photos_own_detail():
    photo, face = _striped_face_photo()
    crop = face_ops.crop(photo, face)
    raised = np.roll(crop, -2, axis=0)  # the edit: the bar 2 crop pixels (20 photo pixels) higher
    flow = face_ops.crop_flow(crop, raised)
    on_bar = (slice(25, 29), slice(18, 30))
    np.testing.assert_allclose(flow[on_bar][..., 1].mean(), 2.0, atol=0.5)  # the crop at p + (0, 2) is the edit at p
    assert np.abs(flow[on_bar][..., 0]).mean() < 0.5
    warped = np.asarray(face_ops.paste(photo, face, crop, raised, blend="warp"), dtype=float)[..., 0]
    before = np.asarray(photo, dtype=float)[..., 0]
    rows = slice(290, 330)  # the bar's upper part, now 20 pixels higher
    cols = slice(260, 340)  # its middle, where the mask is 1
    assert np.abs(warped[rows, cols] - before[20:][rows, cols]).mean() < 6  # the stripes moved, not repainted
    added = np.asarray(face_ops.paste(photo, face, crop, raised, blend="landmarks"), dtype=float)[..., 0]
    assert np.abs(added[rows, cols] - before[20:][rows, cols]).mean() > 2 * np.abs(warped[rows, cols] - before[20:][rows, cols]).mean()
    warped_photo = face_ops.paste(photo, face, crop, raised, blend="warp")
    outside = ~face.inside_crop(*np.mgrid[0:600, 0:600][::-1])
    assert np.array_equal(np.asarray(warped_photo)[outside], np.asarray(photo)[outside])  # bit-identical outside the crop
    assert np.array_equal(np.asarray(face_ops.paste(photo, face, crop, crop, blend="warp")), np.asarray(photo))  # no edit, no change


def _line_face_photo(line: bool = True):
    """A 600x600 photo, 10 photo pixels per crop pixel: smooth skin with (``line``) one sharp dark
    line 2 crop pixels thick across the face, a fold; and that face, without landmarks (the ellipse mask)."""
    yy, xx = np.mgrid[0:600, 0:600]
    pixels = 120 + 0.05 * xx + 0.03 * yy
    if line:
        pixels[(yy >= 310) & (yy < 330) & (xx >= 200) & (xx < 400)] = 50
    return Image.fromarray(pixels.astype(np.uint8)).convert("RGB"), _square_face()


def test_guided_detail_erases_a_fold_at_the_photos_resolution_and_adds_a_smooth_change_unaltered():
    photo, face = _line_face_photo()
    clean, _ = _line_face_photo(line=False)
    crop, clean_crop = face_ops.crop(photo, face), face_ops.crop(clean, face)
    # the edit smooths the fold away: at 48x48 it can only draw that blurred, and added to the
    # photo the blur leaves the line's sharp edges as a ghost; carried with the photo's own detail it goes
    ghost = {b: np.abs(np.asarray(face_ops.paste(photo, face, crop, clean_crop, blend=b), dtype=float) - np.asarray(clean, dtype=float))[290:350, 220:380].mean()
             for b in ("landmarks", "guided")}  # fmt: skip
    assert ghost["guided"] < 0.5 * ghost["landmarks"], ghost
    # where the photo has no detail finer than the crop, the change goes in as it is
    brighter = np.clip(clean_crop.astype(int) + 30, 0, 255).astype(np.uint8)
    added, guided = (np.asarray(face_ops.paste(clean, face, clean_crop, brighter, blend=b), dtype=int) for b in ("landmarks", "guided"))
    assert (added != np.asarray(clean)).sum() > 10000 and np.abs(guided - added).max() <= 1
    outside = ~face.inside_crop(*np.mgrid[0:600, 0:600][::-1])
    assert np.array_equal(np.asarray(face_ops.paste(photo, face, crop, clean_crop, blend="guided"))[outside], np.asarray(photo)[outside])
    assert np.array_equal(np.asarray(face_ops.paste(photo, face, crop, crop, blend="guided")), np.asarray(photo))  # no edit, no change


@pytest.mark.parametrize("face_width", [50, 1000])
def test_tiny_and_huge_faces_are_found_aligned_and_edited_only_inside(photo, finder, face_width):
    """A face 50 pixels wide, and one 1,000 wide in a photo looked at through a reduced copy
    (photos.DETECT_SIDE): found at the same place, its landmarks on the photo itself."""
    face = finder.find(photo)[0]
    scale = face_width / (face.box[2] - face.box[0])
    resized = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
    (found,) = face_ops.select(finder.find(resized), "largest")
    np.testing.assert_allclose(found.left_eye, np.asarray(face.left_eye) * scale, atol=0.05 * face_width)
    np.testing.assert_allclose(np.asarray(found.landmarks)[48:68].mean(0), np.asarray(face.landmarks)[48:68].mean(0) * scale, atol=0.05 * face_width)
    crop = face_ops.crop(resized, found)
    assert np.abs(crop.astype(float) - face_ops.crop(photo, face)).mean() < 12  # the same face, framed alike
    pasted = face_ops.paste(resized, found, crop, np.clip(crop.astype(int) + 30, 0, 255).astype(np.uint8))
    assert _outside_face_unchanged(resized, pasted, found) and pasted != resized


def _smooth_photo_with_a_feature():
    """A smooth gradient with one dark bar: a feature a warp can move."""
    yy, xx = np.mgrid[0:200, 0:200]
    pixels = (xx + yy) / 400 * 100 + 80
    pixels[90:110, 60:140] = 30
    return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")


def test_seam_score_sees_a_step_in_a_flat_area_but_not_a_moved_feature():
    from emodiff.photo_evaluation import seam_score

    photo = _smooth_photo_with_a_feature()
    pixels = np.asarray(photo).astype(int)
    assert seam_score(photo, photo) == 0.0
    seamed = pixels.copy()
    seamed[40:160, 20:180] += 12  # a pasted patch: a 12-level step where the photo is flat
    moved = pixels.copy()
    moved[88:112, 60:140] = np.asarray(_smooth_photo_with_a_feature())[88:112, 60:140]
    moved[86:106, 60:140] = 30  # the bar moved up 4 pixels: large changes, all along the photo's own edges
    shaded = pixels + (np.mgrid[0:200, 0:200][0] / 200 * 10).astype(int)[..., None]  # a smooth shading change
    score = lambda a: seam_score(photo, Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))  # noqa: E731
    assert score(seamed) >= 10
    assert score(moved) <= 1.0 and score(shaded) <= 1.0


def test_evaluate_photos_measures_every_edit_and_finds_nothing_changed_outside_the_face(model_dir, tmp_path, photo_path):
    import json

    out = tmp_path / "photos"
    assert main(["evaluate-photos", str(photo_path), "--model", str(model_dir), "--out", str(out), "--steps", "2", "--seed", "0", "--device", "cpu"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["edits"] == 7 and len(result["rows"]) == 7
    assert result["metrics"]["outside_changed"] == 0
    assert all(0 <= r["identity_distance"] < 2 and r["seam"] >= 0 for r in result["rows"])
    assert 0 <= result["metrics"]["macro_f1_second"] <= 1 and all(r["judged_second"] in EMOTIONS for r in result["rows"])  # both judges report
    assert 0 <= result["metrics"]["macro_f1_crops"] <= 1 and all(r["judged_crop"] in EMOTIONS for r in result["rows"])  # and the 48x48 edits
    sheet = Image.open(out / "contact_sheet.jpg")
    assert sheet.width > 8 * 96 and (out / "report.md").read_text().count("| astronaut.jpg |") == 7 + 1  # its edits, its summary


class _CornerJudge:
    """Reads 'emotion k' from the mean of a crop's top-left 6x6 corner, in 7 bands of brightness:
    a judge whose verdicts a test can predict. The paste-back never reaches that corner (the crop's
    outer border is faded out), so on a re-cropped photo it reads the input, on an edit the edit."""

    def __init__(self):
        import torch

        self.weight = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.weight])

    def predict_proba(self, x):
        import torch

        level = x[:, 0, :6, :6].mean((1, 2))  # [-1, 1]
        return torch.nn.functional.one_hot(((level + 1) / 2 * 7).clamp(0, 6.99).long(), 7).float()


class _MirroredCornerJudge(_CornerJudge):
    """_CornerJudge's bands read in reverse: a second judge that disagrees with the first, predictably."""

    def predict_proba(self, x):
        return super().predict_proba(x).flip(-1)


class _BandEditor:
    """Edits every face to a flat crop of the target's brightness band: what _CornerJudge reads as the target."""

    def edit_prepared(self, prepared, targets, settings, seed=0):
        bands = np.stack([np.full((48, 48), round((t + 0.5) / 7 * 255), np.uint8) for t in targets])
        edits = np.broadcast_to(bands, (len(prepared[0].crops), *bands.shape))
        return [prepared[0].render(edits)], edits, [0, len(edits)]


def test_evaluate_photos_judges_the_48x48_edits_and_the_re_cropped_photos_apart_and_by_copy(photo_path):
    from emodiff.photo_evaluation import ORIGINAL, VARIANTS, _emotion, evaluate_photos
    from emodiff.settings import EditSettings

    evaluation = evaluate_photos(_BandEditor(), [photo_path], EditSettings(), [_CornerJudge()], variants=True)
    m, rows = evaluation.metrics, evaluation.rows
    assert m["macro_f1_crops"] == 1.0 and all(r["judged_crop"] == r["target"] for r in rows)  # the edits, exactly as made
    assert len({r["judged"] for r in rows if r["copy"] == ORIGINAL}) == 1  # the photo's corner never changes: one verdict
    assert m["macro_f1"] < 0.2
    assert list(m["by_copy"]) == [ORIGINAL, *VARIANTS] and all(c["edits"] == 7 and c["macro_f1_crops"] == 1.0 for c in m["by_copy"].values())
    uncovered = [r for r in rows if r["copy"] != "occluded"]
    assert len(uncovered) == 28 and m["macro_f1_uncovered"] == _emotion(uncovered, "judged")["macro_f1"]
    assert m["outside_changed"] == 0
    assert m["macro_f1_crops_second"] is None and m["macro_f1_crops_uncovered_second"] is None  # one judge: nothing for a second


def test_evaluate_photos_reports_the_second_judge_on_the_48x48_edits_too(photo_path):
    """Whether the paste-back thins the change or only one judge reads it so: each judge on both."""
    from emodiff.photo_evaluation import evaluate_photos
    from emodiff.settings import EditSettings

    evaluation = evaluate_photos(_BandEditor(), [photo_path], EditSettings(), [_CornerJudge(), _MirroredCornerJudge()], variants=True)
    m, rows = evaluation.metrics, evaluation.rows
    assert all(r["judged_crop"] == r["target"] and r["judged_crop_second"] == EMOTIONS[6 - EMOTIONS.index(r["target"])] for r in rows)
    assert m["macro_f1_crops"] == 1.0 and m["macro_f1_crops_second"] == pytest.approx(1 / 7)  # only the middle band, happy, reads the same reversed
    assert m["macro_f1_crops_uncovered_second"] == pytest.approx(1 / 7)
    assert all(r["judged_second"] == EMOTIONS[6 - EMOTIONS.index(r["judged"])] for r in rows)  # on the photos, the first's verdict reversed


def test_seam_score_ignores_a_steep_change_inside_the_edit_but_not_the_same_change_cut_off():
    """A 48x48-like change upsampled ten times rises by several grey levels per pixel across a fold,
    and fades out at its border: no seam. Cut off along a circle instead, it ends in a step."""
    from emodiff.photo_evaluation import seam_score

    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.uniform(-40, 40, (24, 24)).astype(np.float32))
    field = np.asarray(coarse.resize((240, 240), Image.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:240, 0:240]
    ramp = np.clip(np.minimum(np.minimum(yy, 239 - yy), np.minimum(xx, 239 - xx)) / 40, 0, 1)
    change = field * ramp * ramp * (3 - 2 * ramp)
    pixels = 100 + 0.2 * xx + 0.1 * yy
    photo = Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    as_photo = lambda a: Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")  # noqa: E731
    faded = as_photo(pixels.astype(np.uint8) + change)
    cut = as_photo(pixels.astype(np.uint8) + change * ((yy - 120) ** 2 + (xx - 120) ** 2 < 70**2))
    steepest = max(np.abs(np.diff(change, axis=0)).max(), np.abs(np.diff(change, axis=1)).max())
    assert steepest > 5  # the change itself steps by more than a cut-off weak change would
    assert seam_score(photo, faded) <= 1.0
    assert seam_score(photo, cut) >= 8.0


def test_seam_score_sees_a_cut_on_a_small_grainy_face_where_edges_are_everywhere():
    """A small face in a grainy photo has an edge within 3 pixels of almost every pixel: a score that
    left those out saw nothing there, a real cut included (the astronaut, README "Seams")."""
    from scipy import ndimage

    from emodiff.photo_evaluation import FLAT, _steps, seam_score

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:120].astype(np.float64)
    pixels = 110 + 0.2 * xx
    for cy in range(3, 120, 7):  # grain: a dark speck every 7 pixels
        for cx in range(3, 120, 7):
            pixels -= 25 * np.exp(-((yy - cy - rng.uniform(-1, 1)) ** 2 + (xx - cx - rng.uniform(-1, 1)) ** 2) / 2)
    coarse = Image.fromarray(rng.uniform(-40, 40, (12, 12)).astype(np.float32))
    ramp = np.clip(np.minimum(np.minimum(yy, 119 - yy), np.minimum(xx, 119 - xx)) / 20, 0, 1)
    change = np.asarray(coarse.resize((120, 120), Image.BICUBIC), dtype=np.float64) * ramp * ramp * (3 - 2 * ramp)
    as_photo = lambda a: Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")  # noqa: E731
    photo = as_photo(pixels)
    base = np.asarray(photo.convert("L")).astype(np.float64)
    assert ndimage.binary_dilation(_steps(ndimage.uniform_filter(base, 3)) >= FLAT, iterations=3).mean() > 0.95
    assert seam_score(photo, as_photo(base + change)) <= 1.0
    assert seam_score(photo, as_photo(base + change * ((yy - 60) ** 2 + (xx - 60) ** 2 < 35**2))) >= 8.0


def test_seam_score_ignores_texture_carried_far_by_a_warp_but_not_a_seam_on_it():
    """A warp moves textured skin several pixels into places that were flat; aligned by optical
    flow first, that is no seam. The same warp with a pasted-on step across a flat cheek is one."""
    import cv2

    from emodiff.photo_evaluation import seam_score

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:240].astype(np.float32)
    pixels = 120 + 0.1 * xx
    for _ in range(40):  # dark blobs (pores, freckles, a mole) on smooth skin: features a warp can carry
        cy, cx, r = rng.uniform(40, 200), rng.uniform(40, 200), rng.uniform(2, 5)
        pixels -= 60 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    bump = 7 * np.exp(-((yy - 120) ** 2 + (xx - 120) ** 2) / (2 * 45.0**2))  # moves the middle up to 7 px
    warped = cv2.remap(pixels.astype(np.float32), xx + bump, yy + 0.5 * bump, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    seamed = warped + np.where((yy > 60) & (yy < 180) & (xx > 150) & (xx < 200), 12, 0)
    as_photo = lambda a: Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")  # noqa: E731
    assert seam_score(photo, as_photo(warped)) <= 2.0
    assert seam_score(photo, as_photo(seamed)) >= 8.0


def test_photo_variants_are_harder_copies_in_which_the_face_is_still_found(photo_path):
    from emodiff.photo_evaluation import VARIANTS, bar_polygon, photo_variants
    from emodiff.photos import Preparer, load_photo

    photo = load_photo(photo_path)
    prepare = Preparer("largest")
    face = prepare(photo).faces[0]
    variants = photo_variants(photo, face)
    assert tuple(variants) == VARIANTS
    assert variants["grey"].mode == "L" and variants["rotated"].size == photo.size
    small_face = prepare(variants["small"]).faces[0]
    assert 40 <= small_face.box[2] - small_face.box[0] <= 90  # about 60 pixels across
    (lx, ly), (rx, ry) = prepare(variants["rotated"]).faces[0].left_eye, prepare(variants["rotated"]).faces[0].right_eye
    assert 12 <= abs(np.degrees(np.arctan2(ry - ly, rx - lx)) - np.degrees(np.arctan2(face.right_eye[1] - face.left_eye[1], face.right_eye[0] - face.left_eye[0]))) <= 28
    bar = np.asarray(variants["occluded"].convert("L"))
    xs, ys = zip(*bar_polygon(face))
    assert bar[int(np.mean(ys)), int(np.mean(xs))] == 40  # the bar sits where the polygon says, below the eyes
    assert np.mean(ys) > face.left_eye[1] + 0.5 * (face.box[3] - face.box[1]) * 0.5


@pytest.mark.slow
def test_evaluate_photos_with_variants_measures_each_copy_and_the_occluder(model_dir, tmp_path, photo_path):
    import json

    out = tmp_path / "photos"
    args = ["evaluate-photos", str(photo_path), "--variants", "--model", str(model_dir), "--out", str(out), "--steps", "2", "--device", "cpu"]
    assert main(args) == 0
    result = json.loads((out / "metrics.json").read_text())
    photos = {r["photo"] for r in result["rows"]}
    assert photos == {"astronaut.jpg"} | {f"astronaut.jpg ({kind})" for kind in ("rotated", "small", "grey", "occluded")}
    assert result["metrics"]["edits"] == 35 and result["metrics"]["outside_changed"] == 0
    assert 0 <= result["metrics"]["occluder_changed"] <= 1
    assert all((r["occluder_changed"] is None) != r["photo"].endswith("(occluded)") for r in result["rows"])
    assert "| astronaut.jpg (small) |" in (out / "report.md").read_text()
