import numpy as np
import pytest
import torch
from PIL import Image

from emodiff import data
from emodiff.data import load_fer2013
from emodiff.labels import EMOTIONS, FERDataError, parse_emotion, parse_emotions, parse_split

from .conftest import synthetic_faces, write_csv


def test_emotion_names_any_case_and_indices():
    assert [parse_emotion(n) for n in EMOTIONS] == list(range(7))
    assert parse_emotion("HaPpY") == 3
    assert parse_emotion(" Surprise ") == 5
    assert parse_emotion(4) == 4 and parse_emotion("6") == 6
    assert parse_emotions("all") == list(range(7))
    assert parse_emotions("sad,ANGRY") == [4, 0]


@pytest.mark.parametrize("bad", ["joy", "7", "-1", ""])
def test_unknown_emotion_lists_valid_names(bad):
    with pytest.raises(FERDataError) as error:
        parse_emotion(bad)
    for name in EMOTIONS:
        assert name in str(error.value)


def test_split_names():
    assert parse_split("publictest") == "PublicTest"
    with pytest.raises(FERDataError, match="Training, PublicTest, PrivateTest"):
        parse_split("validation")


def test_csv_plain_and_gz_and_splits(tmp_path):
    images, labels, usage = synthetic_faces(20)
    usage[-3:] = 2  # PrivateTest rows must be accepted
    plain = load_fer2013(write_csv(tmp_path / "a.csv", images, labels, usage))
    zipped = load_fer2013(write_csv(tmp_path / "a.csv.gz", images, labels, usage))
    for faces in (plain, zipped):
        np.testing.assert_array_equal(faces.images, images)
        np.testing.assert_array_equal(faces.labels, labels)
        assert len(faces.split("PrivateTest")) == 3
        assert len(faces.split("Training")) + len(faces.split("PublicTest")) == 17


def test_csv_and_image_folder_give_identical_arrays(tmp_path):
    images, labels, usage = synthetic_faces(28)
    usage[20:24] = 2
    from_csv = load_fer2013(write_csv(tmp_path / "fer.csv", images, labels, usage))
    root = tmp_path / "folder"
    for i, (img, label, split) in enumerate(zip(images, labels, usage)):
        part = "train" if split == 0 else "test"
        folder = root / part / EMOTIONS[label].capitalize()  # folder names in any case
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{data.SPLITS[split]}_{i:05d}.png")
    from_folder = load_fer2013(root)
    assert len(from_folder) == len(from_csv)
    for split in data.SPLITS:  # same images, same order within each split
        np.testing.assert_array_equal(from_folder.split(split).images, from_csv.split(split).images)
        np.testing.assert_array_equal(from_folder.split(split).labels, from_csv.split(split).labels)


def test_image_folder_without_prefixes_uses_train_and_test(tmp_path):
    images, labels, _ = synthetic_faces(4)
    for i, part in enumerate(["train", "train", "test", "test"]):
        folder = tmp_path / part / EMOTIONS[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"im{i}.jpg", quality=95)
    faces = load_fer2013(tmp_path)
    assert len(faces.split("Training")) == 2 and len(faces.split("PublicTest")) == 2


PIXELS = " ".join(["10"] * 2304)
BAD_ROWS = {
    "wrong pixel count": (f"3,{' '.join(['10'] * 2000)},Training", "2000 pixel values, expected 2304"),
    "non-numeric": (f"3,{PIXELS[:-2]}xy,Training", "not all integers"),
    "label out of range": (f"9,{PIXELS},Training", "emotion '9'"),
    "unknown usage": (f"3,{PIXELS},Validation", "Usage 'Validation'"),
    "pixel above 255": (f"3,{PIXELS[:-2]}300,Training", "outside 0..255"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_bad_row_is_reported_with_its_line_number(tmp_path, kind, capsys):
    row, message = BAD_ROWS[kind]
    images, labels, usage = synthetic_faces(5)
    path = write_csv(tmp_path / "bad.csv", images, labels, usage, extra_lines=[row])
    with pytest.raises(FERDataError) as error:
        load_fer2013(path)
    assert "line 7" in str(error.value)  # header + 5 good rows, then the bad one
    assert message in str(error.value)
    assert "--skip-bad" in str(error.value)
    faces = load_fer2013(path, skip_bad=True)
    assert len(faces) == 5 and "skipped 1 bad row(s), e.g. line 7" in capsys.readouterr().err


def test_missing_file_says_where_to_get_fer2013(tmp_path):
    with pytest.raises(FERDataError) as error:
        load_fer2013(tmp_path / "nowhere.csv")
    assert "nowhere.csv" in str(error.value)
    assert "kaggle" in str(error.value).lower() and "train/<emotion>" in str(error.value)


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(FERDataError, match="line 1"):
        load_fer2013(path)


def test_cache_is_reused_and_invalidated(fer_csv, monkeypatch):
    first = load_fer2013(fer_csv)
    assert list(data.cache_dir().glob("fer2013-*.npz"))

    def no_parse(*args, **kwargs):
        raise AssertionError("the CSV was parsed again instead of read from the cache")

    monkeypatch.setattr(data, "_load_csv", no_parse)
    second = load_fer2013(fer_csv)
    np.testing.assert_array_equal(first.images, second.images)
    monkeypatch.undo()
    # A changed file must not be served from the old cache.
    images, labels, usage = synthetic_faces(10, seed=3)
    write_csv(fer_csv, images, labels, usage)
    assert len(load_fer2013(fer_csv)) == 10


def test_real_rows_load(real_sample_csv):
    faces = load_fer2013(real_sample_csv)
    assert len(faces) == 300 and faces.images.dtype == np.uint8
    assert set(np.unique(faces.labels)) <= set(range(7))


def test_tensor_round_trip_and_augment_keeps_shape():
    images, _, _ = synthetic_faces(8)
    x = data.to_tensor(images)
    assert x.shape == (8, 1, 48, 48) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(data.to_uint8(x), images)
    g = torch.Generator().manual_seed(0)
    flipped = data.augment(x, g, flip=True)
    for a, b in zip(flipped, x):  # each image is either itself or its mirror
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    warped = data.augment(x, torch.Generator().manual_seed(0), max_shift=0.1, max_rotate_deg=10, max_scale=0.1)
    assert warped.shape == x.shape and not torch.equal(warped, x)


def test_fingers_are_drawn_on_the_asked_share_of_faces_as_parallel_bars_in_the_lower_face():
    x = torch.full((400, 1, 48, 48), -0.5)
    assert torch.equal(data.draw_fingers(x, torch.Generator().manual_seed(0), 0.0), x)
    drawn = data.draw_fingers(x, torch.Generator().manual_seed(0), 0.5)
    np.testing.assert_array_equal(drawn, data.draw_fingers(x, torch.Generator().manual_seed(0), 0.5))  # one draw per seed
    changed = (drawn != x).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6 and torch.equal(x, torch.full_like(x, -0.5))  # the input is left alone
    for face in torch.nonzero(changed).flatten()[:50].tolist():
        mask = (drawn[face, 0] != x[face, 0]).numpy()
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert rows.min() >= 16 and 8 <= len(rows) <= 20  # in the lower two thirds, 8 to 20 pixels long
        bars = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
        assert 2 <= len(bars) <= 4 and all(2 <= len(bar) <= 3 for bar in bars)  # 2 to 4 bars, each 2 or 3 pixels wide
        assert (mask[rows.min() : rows.max() + 1][:, columns]).all()  # each bar runs its whole length


def test_a_mosaic_keeps_labels_and_splits_and_its_tiles_never_bleed(tmp_path):
    from emodiff.data import FaceSet, load_mosaic, save_mosaic

    images, labels, usage = synthetic_faces(300)  # more than one row of 256 tiles, the last row part-filled
    faces = FaceSet(images, labels.astype(np.int64), usage.astype(np.int8))
    save_mosaic(faces, tmp_path / "a.jpg")
    back = load_fer2013(tmp_path / "a.jpg", use_cache=False)
    np.testing.assert_array_equal(back.labels, faces.labels)
    np.testing.assert_array_equal(back.usage, faces.usage)
    assert back.images.shape == images.shape and np.abs(back.images.astype(int) - images).mean() < 3  # JPEG of noisy faces
    changed = images.copy()
    changed[5] = 255 - changed[5]
    save_mosaic(FaceSet(changed, faces.labels, faces.usage), tmp_path / "b.jpg")
    other = load_mosaic(tmp_path / "b.jpg")
    keep = np.arange(len(images)) != 5
    np.testing.assert_array_equal(other.images[keep], back.images[keep])  # 8x8 blocks: one face changes only itself


def test_the_real_training_rows_pack_within_a_tenth_of_a_grey_level(real_sample_csv, tmp_path, capsys):
    from emodiff.cli import main

    out = tmp_path / "train.jpg"
    assert main(["pack-data", "--data", str(real_sample_csv), "--out", str(out)]) == 0
    assert "use it as --data" in capsys.readouterr().out
    source, packed = load_fer2013(real_sample_csv).split("Training"), load_fer2013(out)
    np.testing.assert_array_equal(packed.labels, source.labels)
    assert len(packed) == len(source) and np.abs(packed.images.astype(int) - source.images).mean() < 0.2


def test_a_jpeg_that_is_not_a_mosaic_is_named(tmp_path):
    from PIL import Image

    path = tmp_path / "face.jpg"
    Image.new("L", (48, 48), 128).save(path)
    with pytest.raises(FERDataError, match="face.jpg: not an emodiff FER-2013 mosaic"):
        load_fer2013(path, use_cache=False)
