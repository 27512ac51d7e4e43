"""Identity of a face as dlib's face-recognition ResNet sees it (same person below 0.6).

Kept apart from the rest of the evaluation so worker processes import only dlib, numpy and Pillow:
dlib holds the GIL and runs one core, so large sets are split over processes, one per core.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

IDENTITY_THRESHOLD = 0.6
PARALLEL_MIN_FACES = 32  # below this, starting worker processes costs more than it saves (measured: about 0.6 s to start, 94 ms a face in one process)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class IdentityModel:
    """dlib's face-recognition ResNet on FER crops: upsampled to 150x150, the whole image as the
    face box, 5-point landmarks; descriptors 128-d, same person below 0.6."""

    def __init__(self, workers: int | None = None):
        import dlib

        # Locate the weights without importing face_recognition_models: its __init__ needs pkg_resources.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None:
            raise ImportError("identity scores need the face_recognition_models package: pip install face_recognition_models")
        models = Path(spec.submodule_search_locations[0]) / "models"
        self._landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._network = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._box = dlib.rectangle(0, 0, 149, 149)
        self.workers = workers or available_cores()

    def descriptors(self, faces: np.ndarray) -> np.ndarray:
        """(N, 128) descriptors of uint8 (N, 48, 48) faces, over ``workers`` processes for large N."""
        if self.workers < 2 or len(faces) < PARALLEL_MIN_FACES:
            return self._descriptors(faces)
        # spawn, not fork: the parent runs torch's thread pool, which a forked child must not inherit
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker) as pool:
            return np.concatenate(list(pool.map(_worker_descriptors, np.array_split(faces, self.workers * 4))))

    def _descriptors(self, faces: np.ndarray) -> np.ndarray:
        from PIL import Image

        import dlib

        images = [np.asarray(Image.fromarray(face).resize((150, 150), Image.BICUBIC).convert("RGB")) for face in faces]
        shapes = [dlib.full_object_detections([self._landmarks(image, self._box)]) for image in images]
        per_image = self._network.compute_face_descriptor(images, shapes)  # one batched call
        return np.asarray([list(descriptors[0]) for descriptors in per_image], dtype=np.float64).reshape(len(faces), 128)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.descriptors(a) - self.descriptors(b), axis=1)


_worker_model: IdentityModel | None = None


def _start_worker() -> None:
    global _worker_model
    _worker_model = IdentityModel(workers=1)


def _worker_descriptors(faces: np.ndarray) -> np.ndarray:
    return _worker_model._descriptors(faces)
