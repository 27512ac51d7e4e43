"""``emodiff serve``: a gradio web app — upload a photo (or pick a sample), choose emotions, download.

Requests are queued, two at a time. The pipeline builds its sampler per call and the face finder
serialises dlib (not thread-safe) itself, so handlers share them without a lock of their own.
Every image the page shows is a file the request wrote into a folder of its own, never a PIL
image: gradio caches PIL images under a hash of their bytes and writes that file in place, so two
users editing the same sample at once would truncate a file while it is being downloaded; files
it copies atomically. Folders older than ``KEEP_OUTPUTS_SECONDS`` are deleted as new requests come
in, and all of them when the app stops.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from .assets import face_box, sample_faces, sample_photos, view
from .files import image_format, save_image
from .labels import EMOTIONS
from .photos import PhotoError, Preparer, load_photo, output_suffix, save_options
from .settings import EditSettings

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# gradio's own limit only answers "Error" in the page, so it is set well above ours: uploads between
# the two get check_upload's clear message, and the server still never takes a gigabyte.
SERVER_UPLOAD_LIMIT = 10 * MAX_UPLOAD_BYTES
KEEP_OUTPUTS_SECONDS = 3600  # long enough to download, short enough that a busy server's disk stays free


class UploadError(ValueError):
    """An upload the app cannot use; the message is shown to the user."""


def check_upload(path: str | None) -> Image.Image:
    """The uploaded file as an upright image, or a clear reason why not."""
    if not path:
        raise UploadError("Upload a photo or a face crop first (or pick a sample below).")
    name, size = Path(path).name, Path(path).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name} is {size / 2**20:.1f} MB; uploads are limited to 20 MB.")
    try:
        return load_photo(path)
    except PhotoError as error:
        raise UploadError(f"{name}: {error}.") from None
    except (OSError, ValueError):
        raise UploadError(f"{name} is not an image this app can read (JPEG, PNG, WebP, BMP or TIFF).") from None


class EditService:
    """The model behind the app."""

    def __init__(self, model: str | None = None, device: str = "auto", settings: EditSettings = EditSettings()):
        from .pipeline import load_editor

        self.pipeline = load_editor(model, scheduler="ddim", device=device)  # a diffusion model or a GAN
        self.settings = settings
        self.prepare = Preparer("largest")
        self.outputs = Path(tempfile.mkdtemp(prefix="emodiff-app-"))

    def edit(self, path: str | None, chosen: list[str], strength: float):
        """-> (first chosen edit, (input, edit) for the before/after view, 7-emotion strip of (image, caption),
        files to download), every image as a file path."""
        image = check_upload(path)
        if not chosen:
            raise UploadError("Choose at least one emotion.")
        settings = dataclasses.replace(self.settings, strength=float(strength))
        try:
            prepared = self.prepare(image)
        except PhotoError as error:  # no face found
            raise UploadError(f"{Path(path).name}: {error}. Try a photo where the face is frontal and at least 40 pixels wide.") from None
        outputs, _, _ = self.pipeline.edit_prepared([prepared], list(range(len(EMOTIONS))), settings)
        results = outputs[0]
        self.forget_old_outputs()
        folder = Path(tempfile.mkdtemp(dir=self.outputs))
        box = face_box(prepared, image)
        strip = []
        for result, name in zip(results, EMOTIONS):
            cell = folder / "strip" / f"{name}.png"
            save_image(Image.fromarray(view(result, box)), cell)
            strip.append((str(cell), name))
        files = self._downloads(folder, Path(path), prepared, results, chosen)
        before = folder / f"input{Path(files[0]).suffix}"  # upright, as the edit is: the upload may be stored turned
        save_image(image, before, save_options(image, image_format(before)))
        return files[0], (str(before), files[0]), strip, files

    @staticmethod
    def _downloads(folder: Path, upload: Path, prepared, results, chosen: list[str]) -> list[str]:
        suffix, files = output_suffix(upload, is_photo=prepared.faces is not None), []
        for name in chosen:
            target = folder / f"{upload.stem}_{name}{suffix}"
            result = results[EMOTIONS.index(name)]
            save_image(result, target, save_options(result, image_format(target)))
            files.append(str(target))
        return files

    def forget_old_outputs(self, older_than: float = KEEP_OUTPUTS_SECONDS) -> None:
        cutoff = time.time() - older_than
        for folder in self.outputs.iterdir():
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.outputs, ignore_errors=True)


def build_app(service: EditService):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline tool: no telemetry calls
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("emodiff serve needs gradio: pip install 'emodiff[app]' (or pip install gradio)") from None

    def run(path, chosen, strength):
        try:
            return service.edit(path, chosen, strength)
        except UploadError as error:
            raise gr.Error(str(error)) from None

    def check(path):  # right after an upload, so a bad file is named before anyone presses Edit
        try:
            check_upload(path)
        except UploadError as error:
            raise gr.Error(str(error)) from None

    samples = [str(p) for p in sample_photos()] + [str(p) for p in sample_faces()]
    with gr.Blocks(title="emodiff") as app:
        gr.Markdown(
            "# emodiff\nChange the expression of a face with a conditional diffusion model trained on FER-2013. "
            "Upload a photo (faces are found and aligned) or a small face crop, choose emotions, and download. "
            "Edits are made at 48x48 in grayscale and blended into the photo's brightness, so colours are kept."
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Photo or face crop (up to 20 MB)", type="filepath", elem_id="upload")
                chosen = gr.CheckboxGroup(list(EMOTIONS), value=["happy"], label="Emotions", elem_id="emotions")
                strength = gr.Slider(0.1, 1.0, value=service.settings.strength, step=0.05, label="Strength: how far the edit may move from the input", elem_id="strength")
                button = gr.Button("Edit", variant="primary", elem_id="edit")
                gr.Examples(samples, inputs=upload, label="Samples")
            with gr.Column():
                edited = gr.Image(label="Edited", type="pil", elem_id="edited")
                before_after = gr.ImageSlider(label="Before / after", type="pil", elem_id="before-after")
                strip = gr.Gallery(label="All 7 emotions", columns=7, height="auto", elem_id="strip")
                download = gr.File(label="Download", file_count="multiple", elem_id="download")
        upload.upload(check, upload, None)
        button.click(run, [upload, chosen, strength], [edited, before_after, strip, download], concurrency_limit=2)
    return app


def launch(service: EditService, host: str, port: int, block: bool = True):
    """Start the app; with ``block=False`` it serves from a background thread (tests, notebooks)."""
    app = build_app(service)
    app.queue(default_concurrency_limit=2)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=SERVER_UPLOAD_LIMIT,
        show_error=True,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return app
