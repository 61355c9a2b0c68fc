#!/usr/bin/env python3
"""The matmul shapes of one LoRA training step of the 24M Llama, and of decoding, side by side
in one run: tinytune's CPU engine (`cargo bench --bench gemm_shapes`: burn flex's own product,
and the model's `fused::matmul`, which takes a BLAS when one is installed), numpy (OpenBLAS) and
PyTorch, all on the same threads. Prints a Markdown table of GFLOPS; asserts nothing.

    ~/.cache/tinytune/fixtures-venv/bin/python benches/gemm_shapes.py [--threads 2]
"""
import argparse
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_seconds(f, reps=7):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def held(batch, rows, cols, transposed):
    """Random f32 values as numpy and torch views of `[batch, rows, cols]`, stored that way or
    as `[batch, cols, rows]` and transposed."""
    import numpy as np
    import torch

    if not transposed:
        x = np.random.rand(batch, rows, cols).astype(np.float32)
        return x, torch.from_numpy(x)
    x = np.random.rand(batch, cols, rows).astype(np.float32)
    return x.transpose(0, 2, 1), torch.from_numpy(x).transpose(1, 2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    # Set before numpy loads OpenBLAS; the cargo child inherits them.
    os.environ.update(RAYON_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    out = subprocess.run(["cargo", "bench", "--profile", "dev", "--bench", "gemm_shapes"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    print(f"GFLOPS, median of 7 calls, {a.threads} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| shape | batch × m × k × n | burn flex | tinytune's model path | numpy (OpenBLAS) | PyTorch | model path ÷ PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, m, k, n = r["batch"], r["m"], r["k"], r["n"]
        flops = 2.0 * b * m * k * n
        # Each side as the engine holds it: `[rows, cols]`, or a transposed view of `[cols, rows]`
        # (the backward pass's weights on the right, the tokens' sums on the left).
        an, at = held(b, m, k, r.get("a_transposed"))
        bn, bt = held(b, k, n, r["transposed"])
        npy = flops / median_seconds(lambda: np.matmul(an, bn)) / 1e9
        pt = flops / median_seconds(lambda: torch.matmul(at, bt)) / 1e9
        ours = r["gflops_model"] if r.get("gflops_model") is not None else r["gflops"]
        model = f"{r['gflops_model']:.0f}" if r.get("gflops_model") is not None else "(burn flex)"
        print(f"| {r['name']} | {b} × {m} × {k} × {n} | {r['gflops']:.0f} | {model} | {npy:.0f} | {pt:.0f} | {ours / pt:.2f}× |")


if __name__ == "__main__":
    main()
