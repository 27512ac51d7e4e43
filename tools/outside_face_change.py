"""How much of a photo changed far from the face: the top-left quarter (width/4 x height/4) of an input
and its edit, as the fraction of pixels that differ and the mean and largest difference.

    python tools/outside_face_change.py INPUT.jpg EDITED.jpg [INPUT2 EDITED2 ...]
"""

import sys

import numpy as np
from PIL import Image


def main(paths: list[str]) -> None:
    if not paths or len(paths) % 2:
        sys.exit(__doc__)
    for source, edited in zip(paths[::2], paths[1::2]):
        a = np.asarray(Image.open(source).convert("RGB"), dtype=int)
        b = np.asarray(Image.open(edited).convert("RGB"), dtype=int)
        quarter = (slice(0, a.shape[0] // 4), slice(0, a.shape[1] // 4))
        difference = np.abs(a[quarter] - b[quarter])
        changed = np.any(difference > 0, axis=-1).mean()
        print(f"{edited}: {changed:.1%} of the far corner's pixels changed, mean |difference| {difference.mean():.3f}, largest {difference.max()}")


if __name__ == "__main__":
    main(sys.argv[1:])
