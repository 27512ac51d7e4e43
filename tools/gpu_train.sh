#!/usr/bin/env bash
# The whole GPU training job in one call of the device tool, and what it needs packed beforehand.
#
# Here (CPU machine), once:
#   tools/gpu_train.sh prepare --data ../shared/data/fer2013_train_public.csv.gz
#     writes .gpu/fer2013-training.jpg (the Training split as a mosaic, `emodiff pack-data`) and
#     .gpu/wheels/ (diffusers and what it needs that the GPU image lacks, the wheel trimmed of the
#     per-model pipelines emodiff never imports), and prints the size of what will travel.
# There (the device tool's run, with carry [".gpu"]):
#   tools/gpu_train.sh run --out "$OUT" [emodiff train options, e.g. --cond label --images 3000000 --batch-size 512]
#     installs the wheels, trains under accelerate (every GPU, bf16) from the mosaic, and copies the
#     model directory (fp16 weights, metrics.csv, training_config.json, the last sample grid) to --out.
# The same `run` works on a CPU for a tiny trial (tools/gpu_train.sh run --out /tmp/trial --images 256 ...).
set -euo pipefail
cd "$(dirname "$0")/.."  # the device machine gets a copy of the tree, not necessarily a git checkout
mosaic=.gpu/fer2013-training.jpg
wheels=.gpu/wheels
case "${1:-}" in
  prepare)
    shift
    [ "${1:-}" = "--data" ] && [ -n "${2:-}" ] || { echo "usage: $0 prepare --data FER2013.csv" >&2; exit 2; }
    mkdir -p "$wheels"
    emodiff pack-data --data "$2" --out "$mosaic"
    version=$(python -c "import diffusers; print(diffusers.__version__)")
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 -d "$wheels" "diffusers==$version" importlib_metadata lazy-importer
    python - "$wheels/diffusers-$version-py3-none-any.whl" <<'PY'
import re, sys, zipfile
from pathlib import Path
# Keep diffusers' modules and the top of diffusers.pipelines (training_utils imports DiffusionPipeline);
# drop the per-model pipeline packages (3.4 MB of 6.4), which are imported lazily and never by emodiff.
wheel = Path(sys.argv[1])
trimmed = wheel.with_suffix(".trimmed")
dropped = re.compile(r"^diffusers/(pipelines/[^/]+/|modular_pipelines/[^/]+/)")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if not dropped.match(item.filename):
            target.writestr(item, source.read(item))
trimmed.replace(wheel)
PY
    git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "tracked files: %.1f MB\n", $1 / 1e6}'
    du -cb "$mosaic" "$wheels"/*.whl | tail -1 | awk '{printf "carried (.gpu): %.1f MB\n", $1 / 1e6}'
    echo "limit: 67.1 MB (64 MiB) for both together, with any untracked file that git does not ignore"
    ;;
  run)
    shift
    [ "${1:-}" = "--out" ] && [ -n "${2:-}" ] || { echo "usage: $0 run --out DIR [emodiff train options]" >&2; exit 2; }
    out=$2
    shift 2
    if ! python -c "import diffusers" 2>/dev/null; then
      python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl
      export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
      launch=(--num_processes "$(python -c 'import torch; print(torch.cuda.device_count())')" --mixed_precision bf16)
      [ "${launch[1]}" -gt 1 ] && launch+=(--multi_gpu)
    else
      launch=(--cpu --num_processes 1)
    fi
    run=/tmp/emodiff-gpu-run
    python -m accelerate.commands.launch "${launch[@]}" -m emodiff.cli train --data "$mosaic" --out "$run" \
      --checkpoint-minutes 5 --sample-minutes 1000 "$@" ${GPU_TRAIN_RESUME:+--resume}
    python -m emodiff.cli export "$run" "$out/model" --fp16
    last=$(ls "$run"/samples/*.png | tail -1)
    cp "$last" "$out/samples.png"
    echo "model in $out/model; samples: $out/samples.png"
    ;;
  *)
    echo "usage: $0 prepare --data FER2013.csv | run --out DIR [emodiff train options]" >&2
    exit 2
    ;;
esac
