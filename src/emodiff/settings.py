"""How to edit, as one frozen dataclass: no torch, so the command line can show its defaults at once."""

from __future__ import annotations

from dataclasses import dataclass

from .labels import EMOTIONS

MODES = ("paper", "sdedit", "invert")
SAMPLERS = ("ddim", "dpm", "ddpm")  # diffusers' DDIM, DPM-Solver++ (multistep) and DDPM schedulers
DEFAULT_GUIDANCE = 7.0
# What classifier-free guidance pushes away from: no emotion, the face's own, or a named emotion
# (EditSettings.negative).
NEGATIVES = ("null", "source", *EMOTIONS)
BLENDS = ("poisson", "landmarks", "guided", "warp", "ellipse")  # how a photo edit goes back into the photo (photos.paste), the default first


@dataclass(frozen=True)
class EditSettings:
    """How to edit; the defaults are the sweeps' choice for the shipped model (README, docs/sweep,
    docs/sweep_strength, docs/sweep_strength02)."""

    mode: str = "invert"
    # 0.2 over 15 steps since issue #20: with the per-emotion scales chosen at it, both judges read
    # the edits better than at 0.3 (reporting faces 0.616 / 0.627 against 0.604 / 0.585) at the same
    # 91% identity, if further from real faces of the emotion (Frechet 2.23 against 1.89). 15 steps
    # keep the decode at three steps, as 0.3 of 10 did.
    strength: float = 0.2
    steps: int = 15
    # Differential diffusion (Levin & Fried, 2023) in invert mode: the mouth is inverted and decoded
    # from this deeper strength while the rest of the face starts at ``strength`` (the inversion's own
    # path is kept there until the decode reaches it). At strength 0.2 a broad smile does not close:
    # the decode covers its teeth with pale, finger-wide bands (FER-2013's hands) instead. From 0.6 the
    # mouth is redrawn; measured, it keeps the person less on FER's faces, reads less on photos and
    # takes 2.8x the time (docs/photo_experiments.md, "Redrawing the mouth from deeper"), so it is
    # off by default. 0: off.
    mouth_strength: float = 0.0
    # Classifier-free guidance on the label. None: the model's own per-emotion guidance (stored in its
    # directory, pipeline.EDIT_DEFAULTS) where it has one, else DEFAULT_GUIDANCE for every emotion.
    guidance: float | None = None
    # What classifier-free guidance pushes away from: "null" (no emotion: eps_null + g·(eps_target -
    # eps_null), the standard) or "source" (the face's own emotion: eps_source + g·(eps_target -
    # eps_source), a negative prompt). Away from the source, the push is the change of emotion alone,
    # without the pull toward a typical FER face that eps_target - eps_null also carries; and the
    # decode under the source emotion is then the unguided one that mirrors the inversion. Or an
    # emotion's name: the push is then what tells the target from that emotion (measured for the
    # emotions the judge mistakes targets for, angry and sad: no better than null or source,
    # docs/levers.md, "Named negatives"). None: the model's own per target emotion
    # (pipeline.EDIT_DEFAULTS) where it has them, else "null".
    negative: str | None = None
    # Add only the edit's change to the input: (decode under the target) - (decode under the source
    # emotion, from the same start). What the model cannot reconstruct at 48x48 (texture, fine
    # detail) then stays the input's own, and editing to the source emotion returns the input.
    # Costs one more decode per face unless the source emotion is a target. None: on in invert mode
    # (where the sweep measured it), else off.
    keep_detail: bool | None = None
    # Localise the change (with keep_detail): where the change, blurred over a few pixels, stays
    # under half this many grey levels the input is kept exactly, where it reaches this many it is
    # applied in full, with a smooth ramp between. An expression lives in mouth, eyes and brows;
    # faint changes elsewhere cost identity and carry little emotion. 0: off.
    localise: float = 0.0
    # Classifier guidance (Dhariwal & Nichol): at every decoding step, push x_t along the gradient of
    # log p(target | x_t, t) under a noise-aware emotion classifier (``emodiff train-encoder guide``),
    # on top of classifier-free guidance; this is its scale. It strengthens what the denoiser's label
    # alone under-draws. None: the model's own per-emotion scales (pipeline.EDIT_DEFAULTS) where it
    # has them, else 0 (off).
    classifier_guidance: float | None = None
    # Edit a copy of the face brought to FER-2013's typical brightness, and a flat face to its
    # typical contrast, and scale the change back to the face's own contrast (with keep_detail;
    # pipeline.to_typical_level). The model learned expressions on FER's faces: portraits are
    # flatter (their crops have 0.4 to 0.65 of FER's typical contrast) and their edits came out
    # twice as strong as on FER faces, as dark blotches that cost identity; a brightened face lost
    # identity the same way. None: on with keep_detail.
    normalise: bool | None = None
    # Each edit pushed only as hard as it needs: every edit starts at ``push_low`` times its guidance
    # (what classifier-free guidance adds to the conditional prediction, so guidance 1 stays 1) and
    # classifier guidance; after each decoding step but the last, an edit that the model's CNN (the
    # source emotion's predictor, neither judge) does not read as its target with this probability,
    # judged on the step's estimate of the finished edit, goes on at ``push_high`` times them. A fixed
    # scale pushes faces that read at once as hard as faces that resist, and the first pay in identity
    # for nothing. None: 0.5 in invert mode, where it was measured (docs/levers.md, "Each edit pushed
    # as hard as it needs, inside the decode"), else 0 (off). The factors are the tuning faces' best
    # macro F1 with >= 90% of edits the same person (docs/levers.md, "How hard to push").
    push_threshold: float | None = None
    push_low: float = 0.6
    push_high: float = 1.6
    # With the push: an edit found weak takes the very step that found it at ``push_high`` (the step's
    # guided prediction is a sum of model passes already made, so this costs a sum, not a pass)
    # instead of going on harder from the next step. Measured, not the default: on the tuning faces,
    # at 0.4x and 1.4x, both judges read more at the same identity, but the reporting faces kept the
    # person less (88% against 91.5%; docs/levers.md, "Pushed from the step that finds it weak").
    push_same_step: bool = False
    # A budget for each edit's change: where an edit changes the 48x48 face by more than this many
    # grey levels on average (as ``evaluate`` counts change), its change is scaled down to it. The
    # edits that lose the person are the ones that change most, and a push that reads more costs
    # identity mostly there: the cap takes back the largest changes alone. 0: off.
    max_change: float = 0.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.negative is not None and self.negative not in NEGATIVES:
            raise ValueError(f"unknown negative {self.negative!r}: expected one of {', '.join(NEGATIVES)}")
        if self.keep_detail is None:
            object.__setattr__(self, "keep_detail", self.mode == "invert")
        if self.push_threshold is None:
            object.__setattr__(self, "push_threshold", 0.5 if self.mode == "invert" else 0.0)
        if self.normalise is None:
            object.__setattr__(self, "normalise", bool(self.keep_detail))
        if self.keep_detail and self.mode == "paper":
            raise ValueError("keep_detail needs a mode that starts from the input (invert or sdedit), not paper")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength {self.strength} is outside (0, 1]")
        if self.mouth_strength and self.mode != "invert":
            raise ValueError(f"mouth_strength {self.mouth_strength}: the mouth is decoded from deeper along an inversion, "
                             f"so it needs mode invert, not {self.mode}")  # fmt: skip
        if self.mouth_strength and not self.strength < self.mouth_strength <= 1.0:
            raise ValueError(f"mouth_strength {self.mouth_strength}: expected 0 (off), or a strength above the face's "
                             f"({self.strength}) and at most 1")  # fmt: skip
        if self.steps <= 0:
            raise ValueError(f"steps must be a positive number of denoising steps, got {self.steps}")
        if self.localise < 0 or (self.localise and not self.keep_detail):
            raise ValueError(f"localise {self.localise}: expected 0 (off) or a positive number of grey levels, with keep_detail")
        if self.normalise and not self.keep_detail:
            raise ValueError("normalise scales the edit's change back to the face's contrast: it needs keep_detail")
        if self.classifier_guidance is not None and self.classifier_guidance < 0:
            raise ValueError(f"classifier_guidance must be >= 0, got {self.classifier_guidance}")
        if self.guidance is not None and self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if not 0 <= self.push_threshold < 1:
            raise ValueError(f"push_threshold {self.push_threshold}: expected a probability in [0, 1), 0 = off")
        if self.max_change < 0:
            raise ValueError(f"max_change {self.max_change}: expected 0 (off) or a positive number of grey levels")
        if self.push_threshold and not 0 < self.push_low <= self.push_high:
            raise ValueError(f"push_low {self.push_low} and push_high {self.push_high}: expected 0 < push_low <= push_high")
