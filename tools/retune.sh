#!/usr/bin/env bash
# Choose a retrained model's per-emotion edit scales and measure it against the shipped defaults, the
# way the shipped scales were chosen (README "Today's defaults"): a new checkpoint moves every
# emotion's best guidance, so its scales must be chosen anew on the tuning faces before any number on
# the reporting faces means anything.
#
#   tools/retune.sh MODEL OUT --data FER2013.csv [--per-class N] [--baseline DIR]
#                   [--null-grid GUIDANCES:CLASSIFIER_GUIDANCES] [--source-grid GUIDANCES:CLASSIFIER_GUIDANCES]
#                   [--judge DIR] [--second-judge DIR]
#
# 1. two strength-0.2 sweeps on the tuning faces: guidance from the null label (default grid
#    9,13,17:0,15,30) and guidance away from the face's own emotion (5,9,13:15,30), the shipped
#    scales' grids (OUT/sweep_null, OUT/sweep_source; widen a grid if a model's best lies on its edge);
# 2. each emotion's scales over both sweeps' rows (tools/per_emotion_over_sweeps.py), written to
#    OUT/edit_defaults.json and copied into MODEL (where `emodiff edit --model MODEL` reads them);
# 3. `emodiff evaluate` on the tuning and the reporting faces (OUT/tuning, OUT/reporting);
# 4. `emodiff compare` of each against the baseline's evaluation of the same faces (default: the
#    shipped defaults' docs/evaluation_guided/tuning and docs/evaluation_guided), OUT/compare_*.md.
# --judge and --second-judge go to every sweep and evaluation (default: the shipped two); a baseline
# is only comparable when it was judged by the same two.
# About an hour on this CPU alone with the default grids (15 sweep rows, two evaluations). Each step is skipped when its
# output is already there, so a stopped run goes on where it stopped.
set -euo pipefail
usage="usage: $0 MODEL OUT --data FER2013.csv [--per-class N] [--baseline DIR] [--null-grid G:CG] [--source-grid G:CG] [--judge DIR] [--second-judge DIR]"
[ $# -ge 4 ] || { echo "$usage" >&2; exit 2; }
model=$1 out=$2
shift 2
data="" per_class=10 baseline=docs/evaluation_guided null_grid=9,13,17:0,15,30 source_grid=5,9,13:15,30
judges=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "$0: '$1' needs a value; $usage" >&2; exit 2; }
  case "$1" in
    --data) data=$2; shift 2 ;;
    --per-class) per_class=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --null-grid) null_grid=$2; shift 2 ;;
    --source-grid) source_grid=$2; shift 2 ;;
    --judge | --second-judge) judges+=("$1" "$2"); shift 2 ;;
    *) echo "$0: unknown option '$1'; $usage" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] || { echo "$usage" >&2; exit 2; }
[ -f "$data" ] || { echo "$0: no data file '$data' (the FER-2013 CSV)" >&2; exit 2; }
[ -d "$model/denoiser" ] || { echo "$0: '$model' is not a model directory (no denoiser/ in it)" >&2; exit 2; }
for faces in "$baseline/tuning" "$baseline"; do
  [ -f "$faces/edits.csv" ] || { echo "$0: no '$faces/edits.csv' to compare with (an emodiff evaluate folder)" >&2; exit 2; }
done
mkdir -p "$out"

tuning=(--data "$data" --faces tuning --per-class "$per_class" "${judges[@]}")
sweep=(emodiff sweep "${tuning[@]}" --model "$model" --modes invert --strengths 0.2 --steps 15 --keep-detail on)
for grid in "$null_grid" "$source_grid"; do
  [[ "$grid" =~ ^[0-9.,]+:[0-9.,]+$ ]] || { echo "$0: grid '$grid' is not GUIDANCES:CLASSIFIER_GUIDANCES (e.g. 9,13,17:0,15,30)" >&2; exit 2; }
done
[ -f "$out/sweep_null/sweep.json" ] \
  || "${sweep[@]}" --guidances "${null_grid%%:*}" --classifier-guidances "${null_grid#*:}" --out "$out/sweep_null"
[ -f "$out/sweep_source/sweep.json" ] \
  || "${sweep[@]}" --guidances "${source_grid%%:*}" --classifier-guidances "${source_grid#*:}" --negatives source --out "$out/sweep_source"

python "$(dirname "$0")/per_emotion_over_sweeps.py" "$out/sweep_null/sweep.json" "$out/sweep_source/sweep.json" \
  --out "$out/edit_defaults.json"
if ! cmp -s "$out/edit_defaults.json" "$model/edit_defaults.json"; then
  # The scales changed: what was measured with the old ones no longer describes the model.
  rm -rf "$out/tuning" "$out/reporting"
  cp "$out/edit_defaults.json" "$model/.edit_defaults.json.tmp" && mv "$model/.edit_defaults.json.tmp" "$model/edit_defaults.json"
fi

[ -f "$out/tuning/metrics.json" ] || emodiff evaluate "${tuning[@]}" --model "$model" --out "$out/tuning"
[ -f "$out/reporting/metrics.json" ] || emodiff evaluate --data "$data" --faces reporting "${judges[@]}" --model "$model" --out "$out/reporting"
emodiff compare "$baseline/tuning" "$out/tuning" --out "$out/compare_tuning.md"
emodiff compare "$baseline" "$out/reporting" --out "$out/compare_reporting.md"
