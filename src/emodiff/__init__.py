"""emodiff: change the facial expression of a face with a conditional diffusion model.

    from emodiff import EmotionEditPipeline
    pipe = EmotionEditPipeline.from_pretrained()          # the shipped model
    happy = pipe.edit(Image.open("face.png"), "happy")
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "EMOTIONS": "labels",
    "load_fer2013": "data",
    "parse_emotion": "labels",
    "EmotionDenoiser": "denoiser",
    "EmotionCNN": "encoders",
    "EmotionJudge": "encoders",
    "TransformerJudge": "encoders",
    "FaceVAE": "encoders",
    "load_encoder": "encoders",
    "EditSettings": "settings",
    "EmotionEditPipeline": "pipeline",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    """Import submodules on first use: ``emodiff --help`` should not wait for torch and diffusers."""
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'emodiff' has no attribute {name!r}")
