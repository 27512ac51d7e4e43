#!/usr/bin/env bash
# Trained models kept outside the package (Table 1's cnn and vae variants, the GAN peer) live on
# the branch `models`, not in main's tree: main stays small enough to travel to a GPU machine
# beside the training data (64 MiB in all). Every save is a new commit on that branch.
#
#   tools/models.sh fetch                 # models/ from the branch (local, else origin/models)
#   tools/models.sh save models/gan ...   # add or replace these folders under models/ on the branch
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
branch=models
ref=$(git rev-parse -q --verify "refs/heads/$branch" || git rev-parse -q --verify "refs/remotes/origin/$branch" || true)
case "${1:-}" in
  fetch)
    [ -n "$ref" ] || { echo "no branch $branch (nor origin/$branch): nothing to fetch" >&2; exit 2; }
    git archive "$ref" models | tar -x
    git ls-tree -d --name-only "$ref" models/ models/table1/ | grep -v '^models/table1$' | sed 's/^/fetched /'
    ;;
  save)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 save models/NAME..." >&2; exit 2; }
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    export GIT_INDEX_FILE=$scratch/index  # a separate index: main's staging area is never touched
    if [ -n "$ref" ]; then git read-tree "$ref"; else git read-tree --empty; fi
    for folder in "$@"; do
      case "$folder" in models/?*) ;; *) echo "$folder: expected a folder under models/" >&2; exit 2 ;; esac
      [ -d "$folder" ] || { echo "$folder: no such folder" >&2; exit 2; }
      git rm -r -q --cached --ignore-unmatch -- "$folder"
      find "$folder" -type f -not -name ".*" -not -name "checkpoint.safetensors" -print0 | xargs -0 git add -f --
    done
    commit=$(git commit-tree "$(git write-tree)" ${ref:+-p "$ref"} -m "Models: $*")
    git update-ref "refs/heads/$branch" "$commit"
    echo "saved $* as $commit on branch $branch"
    ;;
  *)
    echo "usage: $0 fetch | save models/NAME..." >&2
    exit 2
    ;;
esac
