"""SynthFace rendering speed: images per second at 64x64 on one core (target: >= 300).

    python benchmarks/bench_synthface_render.py [--num 2000] [--size 64]

Attribute sets are sampled beforehand, so the figure is the renderer alone (supersampled drawing plus the
box reduction); PNG encoding for the parquet shards is timed separately.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from unif2ace_hf.data.synthface import render, sample_attributes  # noqa: E402

TARGET = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    rng = random.Random(0)
    attributes = [sample_attributes(rng, novel=i % 10 == 0) for i in range(args.num)]
    for a in attributes[:50]:
        render(a, args.size, 0)  # warm-up

    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        images = [render(a, args.size, seed=i) for i, a in enumerate(attributes)]
        rates.append(args.num / (time.perf_counter() - start))
    start = time.perf_counter()
    for image in images[:500]:
        image.save(io.BytesIO(), format="PNG")
    png_rate = 500 / (time.perf_counter() - start)

    best, median = max(rates), sorted(rates)[len(rates) // 2]
    print(f"render {args.size}x{args.size}, one core, {args.num} images x {args.repeats} repeats")
    print(f"  images/s: median {median:.0f}, best {best:.0f}  (target >= {TARGET:.0f})")
    print(f"  PNG encoding alone: {png_rate:.0f} images/s")
    print("PASS" if median >= TARGET else "FAIL")
    return 0 if median >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
