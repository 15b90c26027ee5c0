"""Images for tokenizer training and evaluation, as one uint8 tensor `(N, H, W, 3)`.

A tokenizer needs pixels only, and the GPU machines may lack `datasets`, so every source is read with tools that are
always there: a `datasets` parquet folder (via `datasets` when installed, else pyarrow), a folder of image files, a
`.npy` array, or `synthface:N[:SEED]`, which renders N SynthFace training faces in memory.
"""

from __future__ import annotations

import glob
import io
import os
import random
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SYNTHFACE_PREFIX = "synthface:"


def _to_rgb_array(image: Image.Image, size: int | None, where: str) -> np.ndarray:
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        if image.width != image.height:
            raise ValueError(f"{where}: image is {image.width}x{image.height}; tokenizer training needs square images.")
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _stack(arrays: list[np.ndarray], source: str) -> torch.Tensor:
    if not arrays:
        raise ValueError(f"`data`: no images found in {source}.")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"`data`: images in {source} have different sizes {sorted(shapes)[:3]}; pass `image_size`.")
    return torch.from_numpy(np.stack(arrays))


def _parquet_files(folder: Path, split: str) -> list[str]:
    files = sorted(glob.glob(str(folder / "**" / f"{split}-*.parquet"), recursive=True))
    if not files:
        files = sorted(glob.glob(str(folder / "**" / split / "*.parquet"), recursive=True))
    return files


def _read_parquet_images(files: list[str], limit: int | None) -> list[bytes]:
    """Encoded image bytes from the `image` column (a datasets `Image` feature: struct of bytes and path)."""
    import pyarrow.parquet as pq

    blobs: list[bytes] = []
    for file in files:
        table = pq.read_table(file, columns=["image"])
        for cell in table.column("image").to_pylist():
            if isinstance(cell, dict):
                cell = cell.get("bytes") or (Path(file).parent / cell["path"]).read_bytes()
            blobs.append(cell)
            if limit is not None and len(blobs) >= limit:
                return blobs
    return blobs


def _load_parquet_folder(folder: Path, split: str, size: int | None, limit: int | None) -> torch.Tensor:
    files = _parquet_files(folder, split)
    if not files:
        raise ValueError(
            f"`data`: {folder} has no parquet shards for split {split!r} (expected data/{split}-*.parquet)."
        )
    blobs = _read_parquet_images(files, limit)
    arrays = [_to_rgb_array(Image.open(io.BytesIO(b)), size, f"{folder} row {i}") for i, b in enumerate(blobs)]
    return _stack(arrays, f"{folder} ({split})")


def _load_image_folder(folder: Path, size: int | None, limit: int | None) -> torch.Tensor:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    return _stack([_to_rgb_array(Image.open(p), size, str(p)) for p in files], str(folder))


def _load_npy(path: Path, size: int | None, limit: int | None) -> torch.Tensor:
    array = np.load(path, mmap_mode="r")[:limit]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"`data`: {path} must hold uint8 images of shape (N, H, W, 3), got {array.dtype} {array.shape}."
        )
    if size is not None and array.shape[1:3] != (size, size):
        return _stack([_to_rgb_array(Image.fromarray(a), size, f"{path}[{i}]") for i, a in enumerate(array)], str(path))
    return torch.from_numpy(np.array(array))  # a writable copy of the memory map


def _render_range(args: tuple[int, int, int, int]) -> np.ndarray:
    # imported here: `unif2ace_hf.data` needs only PIL for these (the `datasets` parts load on first use)
    from ..data.synthface.render import render
    from ..data.synthface.sampler import sample_attributes

    start, stop, size, seed = args
    out = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    for i in range(start, stop):
        rng = random.Random(f"unif2ace-tokenizer/{seed}/{i}")
        attributes = sample_attributes(rng)
        out[i - start] = np.asarray(render(attributes, size=size, seed=rng.getrandbits(31)).convert("RGB"))
    return out


def render_synthface(num_images: int, size: int = 64, seed: int = 0, workers: int | None = None) -> torch.Tensor:
    """`num_images` SynthFace faces drawn like the training split (no held-out pairs), from a stream of their own
    (`seed`), so they never coincide with a written data set's test rows."""
    if num_images < 1:
        raise ValueError(f"`data`: synthface needs at least one image, got {num_images}.")
    workers = max(1, min(workers or (os.cpu_count() or 1), 16, num_images // 500 or 1))
    chunk = -(-num_images // workers)
    ranges = [(s, min(s + chunk, num_images), size, seed) for s in range(0, num_images, chunk)]
    if workers == 1:
        parts = [_render_range(r) for r in ranges]
    else:
        with ProcessPoolExecutor(workers) as pool:
            try:
                parts = list(pool.map(_render_range, ranges))
            except BrokenProcessPool as error:
                raise RuntimeError(
                    f"`data`: a SynthFace rendering worker died (killed, or out of memory) while {workers} workers "
                    f"rendered {num_images} images; nothing was trained. Rerun, with fewer images per run if memory "
                    "is short."
                ) from error
            except Exception as error:  # an error inside a worker: say where, keep the worker's traceback as cause
                raise RuntimeError(
                    f"`data`: a SynthFace rendering worker failed: {type(error).__name__}: {error}"
                ) from error
    return torch.from_numpy(np.concatenate(parts))


def load_images(
    source: str | os.PathLike, split: str = "train", image_size: int | None = None, limit: int | None = None
) -> torch.Tensor:
    """Images `(N, H, W, 3)` uint8 from `source` (see the module docstring); `image_size` resizes (bicubic)."""
    text = str(source)
    if text.startswith(SYNTHFACE_PREFIX):
        parts = text[len(SYNTHFACE_PREFIX) :].split(":")
        try:
            count, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise ValueError(f"`data`: expected synthface:N or synthface:N:SEED, got {text!r}.") from None
        count = min(count, limit) if limit else count
        return render_synthface(count, size=image_size or 64, seed=seed)
    path = Path(source)
    if path.suffix == ".npy" and path.is_file():
        return _load_npy(path, image_size, limit)
    if not path.is_dir():
        raise ValueError(f"`data`: {path} is neither a folder, a .npy file nor synthface:N.")
    if _parquet_files(path, split):
        return _load_parquet_folder(path, split, image_size, limit)
    split_folder = path / split
    return _load_image_folder(split_folder if split_folder.is_dir() else path, image_size, limit)


def load_attributes(source: str | os.PathLike, split: str = "test", limit: int | None = None) -> list[dict] | None:
    """The `attributes` column of a parquet folder (SynthFace truth, in row order), or `None` if there is none."""
    path = Path(source)
    files = _parquet_files(path, split) if path.is_dir() else []
    if not files:
        return None
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for file in files:
        table = pq.read_table(file)
        if "attributes" not in table.column_names:
            return None
        rows.extend(table.column("attributes").to_pylist())
        if limit is not None and len(rows) >= limit:
            break
    return rows[:limit]


def to_pixel_values(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 `(N, H, W, 3)` -> `(N, 3, H, W)` in [-1, 1] (on the images' device)."""
    return images.permute(0, 3, 1, 2).to(dtype).div_(127.5).sub_(1.0)


def to_pil(pixel_values: torch.Tensor) -> list[Image.Image]:
    """`(N, 3, H, W)` in [-1, 1] -> PIL images."""
    array = ((pixel_values.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


__all__ = ["load_attributes", "load_images", "render_synthface", "to_pixel_values", "to_pil"]
