#!/usr/bin/env bash
# The whole GPU training job in two back-to-back calls of the device tool, and what it needs packed
# beforehand. Two calls because one carries at most 64 MiB: the tracked tree (~43 MB) and the
# Training mosaic (37 MB) do not fit together, so the mosaic travels as two byte halves.
#
# Here (CPU machine), once:
#   tools/gpu_train.sh prepare --data ../shared/data/fer2013_train_public.csv.gz
#     writes the Training split as a mosaic (`emodiff pack-data`) cut into .gpu/part0/ and
#     .gpu/part1/ (with its sha256), puts diffusers' wheels (trimmed of the per-model pipelines
#     emodiff never imports) and what it needs that the GPU image lacks into .gpu/part0/, and
#     prints what each call carries.
# There (the device tool's run), the second call within the machine's 30 s warm window:
#   tools/gpu_train.sh stage                                   # carry [".gpu/part0"]
#     keeps the first half and the installed wheels in /tmp/emodiff-gpu (kept while the machine is warm)
#   tools/gpu_train.sh run --out "$OUT" [emodiff train options]  # carry [".gpu/part1"]
#     joins and checks the mosaic, trains under accelerate (every GPU, bf16), and copies the model
#     directory (fp16 weights, metrics.csv, training_config.json, the last sample grid) to --out.
# The same two steps work on a CPU for a tiny trial (tools/gpu_train.sh run --out /tmp/trial --images 256 ...).
set -euo pipefail
cd "$(dirname "$0")/.."  # the device machine gets a copy of the tree, not necessarily a git checkout
staged=/tmp/emodiff-gpu  # on the device machine: what the first call leaves for the second
name=fer2013-training.jpg
case "${1:-}" in
  prepare)
    shift
    [ "${1:-}" = "--data" ] && [ -n "${2:-}" ] || { echo "usage: $0 prepare --data FER2013.csv" >&2; exit 2; }
    rm -rf .gpu && mkdir -p .gpu/part0/wheels .gpu/part1
    emodiff pack-data --data "$2" --out ".gpu/$name"
    (cd .gpu && sha256sum "$name" >part1/$name.sha256 && split -n 2 -d -a 1 "$name" "$name." \
      && mv "$name.0" part0/ && mv "$name.1" part1/ && rm "$name")
    wheels=.gpu/part0/wheels
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
    tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
    for part in part0 part1; do
      carried=$(du -sb ".gpu/$part" | cut -f1)
      awk -v t="$tracked" -v c="$carried" -v p="$part" 'BEGIN {
        printf "call with carry [\".gpu/%s\"]: %.1f MB tracked + %.1f MB carried = %.1f of 67.1 MB (64 MiB)\n", p, t / 1e6, c / 1e6, (t + c) / 1e6 }'
    done
    ;;
  stage)
    [ -f ".gpu/part0/$name.0" ] || { echo "no .gpu/part0/$name.0: call with carry [\".gpu/part0\"] (after '$0 prepare' here)" >&2; exit 2; }
    rm -rf "$staged" && mkdir -p "$staged"
    cp ".gpu/part0/$name.0" "$staged/"
    if ! python -c "import diffusers" 2>/dev/null; then
      python -m pip install -q --no-index --no-deps --no-compile --target "$staged/site" .gpu/part0/wheels/*.whl
    fi
    echo "staged in $staged: now, within 30 s, '$0 run --out \"\$OUT\" ...' with carry [\".gpu/part1\"]"
    ;;
  run)
    shift
    [ "${1:-}" = "--out" ] && [ -n "${2:-}" ] || { echo "usage: $0 run --out DIR [emodiff train options]" >&2; exit 2; }
    out=$2
    shift 2
    [ -f "$staged/$name.0" ] || { echo "$staged/$name.0 missing: '$0 stage' did not run on this machine (a fresh one?); stage, then run within 30 s" >&2; exit 2; }
    cat "$staged/$name.0" ".gpu/part1/$name.1" >"$staged/$name"
    (cd "$staged" && sha256sum --quiet -c "$OLDPWD/.gpu/part1/$name.sha256") || { echo "the joined mosaic does not match its sha256: prepare again" >&2; exit 2; }
    [ -d "$staged/site" ] && export PYTHONPATH=$staged/site
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
      launch=(--num_processes "$(python -c 'import torch; print(torch.cuda.device_count())')" --mixed_precision bf16)
      [ "${launch[1]}" -gt 1 ] && launch+=(--multi_gpu)
    else
      launch=(--cpu --num_processes 1)
    fi
    run=$staged/run
    python -m accelerate.commands.launch "${launch[@]}" -m emodiff.cli train --data "$staged/$name" --out "$run" \
      --checkpoint-minutes 5 --sample-minutes 1000 "$@" ${GPU_TRAIN_RESUME:+--resume}
    python -m emodiff.cli export "$run" "$out/model" --fp16
    last=$(ls "$run"/samples/*.png | tail -1)
    cp "$last" "$out/samples.png"
    echo "model in $out/model; samples: $out/samples.png"
    ;;
  *)
    echo "usage: $0 prepare --data FER2013.csv | stage | run --out DIR [emodiff train options]" >&2
    exit 2
    ;;
esac
