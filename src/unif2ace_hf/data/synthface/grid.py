"""A contact sheet of SynthFace rows with their captions, for a person to judge the data by eye.

python -m unif2ace_hf.data.synthface.grid --output docs/images/synthface_grid.png
"""

from __future__ import annotations

import argparse
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont

from .builder import make_row


def make_grid(num: int = 24, size: int = 128, seed: int = 0, columns: int = 6, split: str = "train") -> Image.Image:
    """`num` rows of `split` (as `unif2ace data synthface --seed seed --size size` writes them) with captions."""
    if num < 1 or columns < 1:
        raise ValueError(f"`num` and `columns` must be >= 1, got {num} and {columns}.")
    font = ImageFont.load_default(size=12)
    cell_w, text_lines, line_h = max(size + 20, 300), 15, 14
    cell_h = size + 12 + text_lines * line_h
    rows = -(-num // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(num):
        row = make_row(seed, split, i, size)
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        sheet.paste(Image.open(io.BytesIO(row["image"]["bytes"])), (x + (cell_w - size) // 2, y + 4))
        lines = textwrap.wrap(row["caption"], width=48)
        if len(lines) > text_lines:
            lines = lines[: text_lines - 1] + [lines[text_lines - 1][:44] + " ..."]
        for j, line in enumerate(lines):
            draw.text((x + 8, y + size + 8 + j * line_h), line, fill=(20, 20, 20), font=font)
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--num", type=int, default=24)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_grid(args.num, args.size, args.seed).save(args.output, optimize=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
