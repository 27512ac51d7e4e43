"""Time one face -> all 7 emotions: the paper's path against emodiff's default fast path, same run.

paper path: start from pure noise, DDPM ancestral sampling over all 1000 steps, fp32, no guidance
            (one network pass per step), the target label and the input's semantic code.
fast path:  the `emodiff edit` defaults (EditSettings()), DDIM, bf16 autocast where supported;
            timed also without classifier guidance, to show what the guide costs, with each
            --mouth-strengths value (the mouth decoded from deeper) and each --push-thresholds
            value (each edit pushed as hard as it needs), to show what those cost.

    python benchmarks/edit_speed.py [--model DIR] [--repeats 3] [--device cpu] [--mouth-strengths 0.4,0.6] [--push-thresholds 0.5]

Without a shipped or given model the default architecture is timed untrained: speed does not
depend on the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import numpy as np
import torch

from PIL import Image

from emodiff.assets import sample_faces
from emodiff.denoiser import EmotionDenoiser
from emodiff.labels import EMOTIONS
from emodiff.pipeline import DEFAULT_MODEL, EmotionEditPipeline, sampling_scheduler
from emodiff.settings import DEFAULT_GUIDANCE, EditSettings


def load(model: str | None, device: str) -> tuple[EmotionEditPipeline, str]:
    if model or (DEFAULT_MODEL / "denoiser").is_dir():
        return EmotionEditPipeline.from_pretrained(model, device=device), str(model or DEFAULT_MODEL)
    return EmotionEditPipeline(EmotionDenoiser(), sampling_scheduler("ddim")).to(device), "untrained default architecture"


def best_of(repeats: int, run) -> tuple[float, float]:
    """The best and the median of ``repeats`` timings of ``run()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path; the best is reported")
    parser.add_argument("--paper-repeats", type=int, default=1, help="timed runs of the slow paper path")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--mouth-strengths", type=lambda text: [float(v) for v in text.split(",")], default=[],
                        help="also time the fast path with each of these comma-separated --mouth-strength values")
    parser.add_argument("--push-thresholds", type=lambda text: [float(v) for v in text.split(",")], default=[],
                        help="also time the fast path with each of these comma-separated --push-threshold values")
    args = parser.parse_args()

    pipe, source = load(args.model, args.device)
    face = np.asarray(Image.open(sample_faces()[0]).convert("L"))[None]
    targets = list(range(len(EMOTIONS)))
    fast = EditSettings()
    print(f"model: {source}; {sum(p.numel() for p in pipe.denoiser.parameters()) / 1e6:.2f}M denoiser parameters")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    fast_scheduler = pipe.scheduler
    paper_pipe = EmotionEditPipeline(pipe.denoiser, sampling_scheduler("ddpm", pipe.scheduler), pipe.encoder).to(args.device, bf16=False)

    def run_fast():  # bf16 autocast where supported
        pipe.edit_faces(face, targets, fast, source_labels=[0])

    def run_unguided():  # the same strength, one guidance for all and no classifier guidance: what the guide costs
        pipe.edit_faces(face, targets, EditSettings(guidance=DEFAULT_GUIDANCE, classifier_guidance=0.0), source_labels=[0])

    def run_paper():
        paper_pipe.edit_faces(face, targets, EditSettings(mode="paper", steps=1000, guidance=1.0), source_labels=[0])

    run_fast()  # warm-up: first calls allocate and pick kernels
    fast_best, fast_median = best_of(args.repeats, run_fast)
    fast_bf16 = pipe.bf16
    unguided_best, unguided_median = best_of(args.repeats, run_unguided)
    variants = {}
    measured = {"mouth_strength": ("the mouth from", args.mouth_strengths), "push_threshold": ("each edit pushed as hard as it needs, threshold", args.push_thresholds)}
    for field, (name, values) in measured.items():
        for value in values:
            settings = dataclasses.replace(fast, **{field: value})
            variants[f"{name} {value:g}"] = best_of(args.repeats, lambda: pipe.edit_faces(face, targets, settings, source_labels=[0]))
    paper_best, paper_median = best_of(args.paper_repeats, run_paper)
    print(f"paper path (paper mode, DDPM 1000 steps, fp32, guidance 1): {paper_best:8.3f} s  (median {paper_median:.3f})")
    print(
        f"fast path  ({fast.mode}, strength {fast.strength}, {type(fast_scheduler).__name__} {fast.steps} steps, "
        f"the model's guidance and classifier guidance per emotion, bf16 {fast_bf16}): {fast_best:8.3f} s  (median {fast_median:.3f})"
    )
    print(f"  without classifier guidance (guidance {DEFAULT_GUIDANCE:g} for all): {unguided_best:8.3f} s  (median {unguided_median:.3f})")
    for name, (best, median) in variants.items():
        print(f"  {name}: {best:8.3f} s  (median {median:.3f}), {best / fast_best:.2f}x the fast path's time")
    print(f"speed-up: {paper_best / fast_best:.1f}x  (1 face -> {len(targets)} emotions)")


if __name__ == "__main__":
    main()
