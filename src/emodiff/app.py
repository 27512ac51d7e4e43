"""``emodiff serve``: a gradio web app — upload a photo (or pick a sample), choose emotions, download.

Requests are queued (two at a time) and the model runs one edit at a time under a lock: the
pipeline's scheduler keeps per-call state, and a 2-core CPU gains nothing from running edits side
by side.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .data import EMOTIONS
from .demo import SAMPLE_PHOTOS, _cell, _square_around
from .editing import Preparer, edit_prepared, load_pipeline, output_suffix
from .faces import load_photo
from .files import save_image
from .pipeline import EditSettings
from .predict import sample_faces

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# gradio's own limit only answers "Error" in the page, so it is set well above ours: uploads between
# the two get check_upload's clear message, and the server still never takes a gigabyte.
SERVER_UPLOAD_LIMIT = 10 * MAX_UPLOAD_BYTES


class UploadError(ValueError):
    """An upload the app cannot use; the message is shown to the user."""


def check_upload(path: str | None) -> Image.Image:
    """The uploaded file as an upright image, or a clear reason why not."""
    if not path:
        raise UploadError("Upload a photo or a face crop first (or pick a sample below).")
    size = Path(path).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(f"{Path(path).name} is {size / 2**20:.1f} MB; uploads are limited to 20 MB.")
    try:
        return load_photo(path)
    except (UnidentifiedImageError, OSError, ValueError):
        raise UploadError(f"{Path(path).name} is not an image this app can read (JPEG, PNG, WebP, BMP or TIFF).") from None


class EditService:
    """The model behind the app: one edit at a time."""

    def __init__(self, model: str | None = None, device: str = "auto", settings: EditSettings = EditSettings()):
        self.pipeline = load_pipeline(model, "ddim", device)
        self.settings = settings
        self.prepare = Preparer("largest")
        self.lock = threading.Lock()
        self.outputs = Path(tempfile.mkdtemp(prefix="emodiff-app-"))

    def edit(self, path: str | None, chosen: list[str], strength: float):
        """-> (first chosen edit, 7-emotion strip of (image, caption), files to download)."""
        image = check_upload(path)
        if not chosen:
            raise UploadError("Choose at least one emotion.")
        settings = dataclasses.replace(self.settings, strength=float(strength))
        try:
            prepared = self.prepare(image)
        except ValueError as error:  # no face found
            raise UploadError(f"{Path(path).name}: {error}") from None
        with self.lock:
            outputs, _, _ = edit_prepared(self.pipeline, [prepared], list(range(len(EMOTIONS))), settings)
        results = outputs[0]
        box = _square_around(prepared.faces[0], image) if prepared.faces else None
        strip = [(Image.fromarray(_cell(result, box)), name) for result, name in zip(results, EMOTIONS)]
        suffix, stem = output_suffix(Path(path), prepared), Path(path).stem
        folder = Path(tempfile.mkdtemp(dir=self.outputs))
        files = []
        for name in chosen:
            target = folder / f"{stem}_{name}{suffix}"
            save_image(results[EMOTIONS.index(name)], target)
            files.append(str(target))
        return results[EMOTIONS.index(chosen[0])], strip, files


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

    samples = [str(p) for p in sorted(SAMPLE_PHOTOS.glob("*.jpg"))] + [str(p) for p in sample_faces()]
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
                strength = gr.Slider(0.3, 1.0, value=service.settings.strength, step=0.05, label="Strength: how far the edit may move from the input", elem_id="strength")
                button = gr.Button("Edit", variant="primary", elem_id="edit")
                gr.Examples(samples, inputs=upload, label="Samples")
            with gr.Column():
                edited = gr.Image(label="Edited", type="pil", elem_id="edited")
                strip = gr.Gallery(label="All 7 emotions", columns=7, height="auto", elem_id="strip")
                download = gr.File(label="Download", file_count="multiple", elem_id="download")
        upload.upload(check, upload, None)
        button.click(run, [upload, chosen, strength], [edited, strip, download], concurrency_limit=2)
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


def serve(args) -> int:
    launch(EditService(args.model, args.device), args.host, args.port)
    return 0
