#!/usr/bin/env bash
# Keep long training runs' checkpoints in git without growing main: they live on the branch
# `checkpoints` as a single commit, replaced on every save (older copies become unreachable).
#
#   tools/checkpoints.sh save runs/label runs/cnn ...   # the run folders' files (samples left out)
#   tools/checkpoints.sh restore                        # put them back under runs/ to --resume
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
case "${1:-}" in
  save)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 save RUN_DIR..." >&2; exit 2; }
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    index=$scratch/index  # a separate index: main's staging area is never touched
    for run in "$@"; do
      [ -f "$run/checkpoint.safetensors" ] || { echo "$run: no checkpoint.safetensors" >&2; exit 2; }
      find "$run" -type f -not -path "*/samples/*" -not -name ".*" -print0 | GIT_INDEX_FILE=$index xargs -0 git add -f --
    done
    tree=$(GIT_INDEX_FILE=$index git write-tree)
    commit=$(git commit-tree "$tree" -m "Training checkpoints of: $*")
    git update-ref refs/heads/checkpoints "$commit"
    echo "saved $* as $commit on branch checkpoints"
    ;;
  restore)
    git rev-parse -q --verify refs/heads/checkpoints >/dev/null || { echo "no branch checkpoints" >&2; exit 2; }
    git archive checkpoints | tar -x --skip-old-files  # a newer local run is never overwritten
    git ls-tree -r --name-only checkpoints | sed 's|/[^/]*$||' | sort -u | sed 's/^/restored /'
    ;;
  *)
    echo "usage: $0 save RUN_DIR... | restore" >&2
    exit 2
    ;;
esac
