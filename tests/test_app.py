"""The web app's service layer (the browser-driven test lives with the app's UI tests)."""

import threading

import pytest
from PIL import Image

from emodiff.app import MAX_UPLOAD_BYTES, EditService, UploadError, check_upload
from emodiff.assets import sample_faces



@pytest.fixture(scope="module")
def service(model_dir):
    return EditService(str(model_dir), device="cpu")


def test_oversize_upload_is_refused_with_its_size(tmp_path):
    big = tmp_path / "huge.png"
    with open(big, "wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(UploadError, match="20 MB"):
        check_upload(str(big))


def test_non_image_upload_is_refused(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(UploadError, match="not an image"):
        check_upload(str(text))
    with pytest.raises(UploadError, match="Upload"):
        check_upload(None)


def test_edit_returns_the_edit_the_strip_and_downloads(service):
    face = str(sample_faces()[0])
    edited, (before, after), strip, files = service.edit(face, ["sad", "surprise"], 0.6)
    assert Image.open(edited).size == (48, 48) and edited == files[0]
    assert after == edited and Image.open(before).size == Image.open(edited).size  # the before/after view
    assert [caption for _, caption in strip] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert all(Image.open(cell).size == (96, 96) for cell, _ in strip)
    assert [f.rsplit("_", 1)[1] for f in files] == ["sad.png", "surprise.png"]
    with pytest.raises(UploadError, match="at least one"):
        service.edit(face, [], 0.6)


def test_two_requests_at_once_are_both_served(service):
    faces = [str(p) for p in sample_faces()[:2]]
    results, errors = {}, []

    def request(index):
        try:
            results[index] = service.edit(faces[index], ["happy"], 0.5)
        except Exception as error:  # noqa: BLE001 - surfaced below
            errors.append(error)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and sorted(results) == [0, 1]
    assert all(len(result[3]) == 1 for result in results.values())


def test_the_strength_slider_starts_at_the_default_strength_inside_its_range(service):
    from emodiff.app import build_app

    app = build_app(service)
    (slider,) = [block for block in app.blocks.values() if getattr(block, "elem_id", None) == "strength"]
    assert slider.value == service.settings.strength  # the edit a user gets without touching it is the default
    assert slider.minimum <= slider.value <= slider.maximum  # a default below the minimum would be clamped
