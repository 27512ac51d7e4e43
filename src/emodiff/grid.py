"""Labelled image grids (edit grids, training samples, evaluation figures)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def labelled_grid(
    cells: np.ndarray, row_labels: list[str] = (), col_labels: list[str] = (), scale: int = 2, pad: int = 2
) -> Image.Image:
    """uint8 (rows, cols, H, W) or (rows, cols, H, W, 3) -> one image, cells upscaled ``scale`` times, labelled."""
    rows, cols, height, width = cells.shape[:4]
    mode = "RGB" if cells.ndim == 5 else "L"
    ink, paper = ((0, 0, 0), (255, 255, 255)) if mode == "RGB" else (0, 255)
    font = ImageFont.load_default()
    cell_h, cell_w = height * scale, width * scale
    left = 8 + max((int(font.getlength(label)) for label in row_labels), default=-8)
    top = 14 if col_labels else 0
    canvas = Image.new(mode, (left + cols * (cell_w + pad), top + rows * (cell_h + pad)), color=paper)
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(col_labels):
        x = left + c * (cell_w + pad) + (cell_w - int(font.getlength(label))) // 2
        draw.text((x, 1), label, fill=ink, font=font)
    for r in range(rows):
        y = top + r * (cell_h + pad)
        if r < len(row_labels):
            draw.text((2, y + cell_h // 2 - 6), row_labels[r], fill=ink, font=font)
        for c in range(cols):
            cell = Image.fromarray(cells[r, c]).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(cell, (left + c * (cell_w + pad), y))
    return canvas
