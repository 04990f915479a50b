#!/usr/bin/env python3
"""Turns criterion's estimates (target/criterion) into the Markdown tables of
BENCHMARKS.md. Run after the benches:

    cargo bench --bench conv && cargo bench --bench gemm --features openblas-system
    python3 benches/report.py [CRITERION_DIR]

CRITERION_DIR defaults to target/criterion. Medians only: the machine is
shared and noisy.
"""

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "criterion"

# PyTorch's medians (ms, forward / backward) from `benches/pytorch.py`, which
# writes them to target/pytorch.json; without that file, the figures the
# speed issue measured on this machine type (PyTorch 2.15, oneDNN, 2 threads).
PYTORCH_JSON = ROOT / "target" / "pytorch.json"
PYTORCH_ISSUE = {
    "seed": (0.105, 0.77), "seed64": (0.146, 0.36), "r3x3": (9.3, 20.6),
    "r3x3s2": (11.4, 23.6), "r1x1": (9.2, 18.2), "stem": (10.7, 60.2),
    "dw": (1.7, 5.0), "dil": (8.6, 18.8),
}
if PYTORCH_JSON.exists():
    PYTORCH = {row: (v["pytorch_fwd_ms"], v["pytorch_bwd_ms"])
               for row, v in json.loads(PYTORCH_JSON.read_text()).items()}
    PYTORCH_SOURCE = f"{PYTORCH_JSON.relative_to(ROOT)} (benches/pytorch.py)"
else:
    PYTORCH, PYTORCH_SOURCE = PYTORCH_ISSUE, "the speed issue's figures"
# The notebook's published %timeit means (numpy, float64, another machine), ms.
NOTEBOOK = {"naive": (484, 132), "im2col": (28.4, 66.2), "strided": (3.63, 19.6)}


def median_ms(*parts):
    path = CRITERION.joinpath(*parts, "new", "estimates.json")
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e6


def suite_gflop():
    """Forward GFLOP per row id, from SUITE.md's last column."""
    gflop = {}
    for line in (ROOT / "benches" / "SUITE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and re.fullmatch(r"[0-9.]+", cells[-1]):
            gflop[cells[0]] = float(cells[-1])
    return gflop


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}g}"


def ratio(a, b):
    return None if a is None or b is None else a / b


def conv_tables():
    gflop = suite_gflop()
    rows = [r for r in gflop if (CRITERION / r).exists()]
    print("### Forward and backward, default build (strided, auto kernels)\n")
    print("| row | fwd ms | fwd GFLOP/s | bwd ms | bwd GFLOP/s | bwd / fwd | im2col fwd / bwd ms | naive fwd / bwd ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, b = median_ms(r, "fwd", "strided"), median_ms(r, "bwd", "strided")
        fi, bi = median_ms(r, "fwd", "im2col"), median_ms(r, "bwd", "im2col")
        fn_, bn = median_ms(r, "fwd", "naive"), median_ms(r, "bwd", "naive")
        g = gflop[r]
        print(f"| {r} | {fmt(f)} | {fmt(ratio(g * 1e3, f))} | {fmt(b)} | {fmt(ratio(2 * g * 1e3, b))} "
              f"| {fmt(ratio(b, f), 2)} | {fmt(fi)} / {fmt(bi)} | {fmt(fn_)} / {fmt(bn)} |")
    print("\n### Against PyTorch (oneDNN) and the notebook\n")
    print(f"PyTorch from {PYTORCH_SOURCE}; gemmconv from criterion. "
          "Ratio = gemmconv time / PyTorch time (below 1: gemmconv is faster).\n")
    print("| row | fwd ms | PyTorch fwd ms | ratio | bwd ms | PyTorch bwd ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f, b = median_ms(r, "fwd", "strided"), median_ms(r, "bwd", "strided")
        pf, pb = PYTORCH.get(r, (None, None))
        print(f"| {r} | {fmt(f)} | {fmt(pf)} | {fmt(ratio(f, pf), 2)} | {fmt(b)} | {fmt(pb)} | {fmt(ratio(b, pb), 2)} |")
    if (CRITERION / "seed64").exists():
        print("\nseed64 (the notebook's workload, f64) against the notebook's published figures:\n")
        print("| algorithm | fwd ms | notebook fwd ms | speed-up | bwd ms | notebook bwd ms | speed-up |")
        print("|---|---|---|---|---|---|---|")
        for algo, (nf, nb) in NOTEBOOK.items():
            f, b = median_ms("seed64", "fwd", algo), median_ms("seed64", "bwd", algo)
            print(f"| {algo} | {fmt(f)} | {nf} | {fmt(ratio(nf, f))}x | {fmt(b)} | {nb} | {fmt(ratio(nb, b))}x |")
    print("\n### Kernels of the strided algorithm (ms, medians)\n")
    print("| row | fwd auto | fwd column matrix | fwd shifted | fwd winograd "
          "| bwd auto | bwd column matrix | bwd shifted | bwd winograd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [median_ms(r, p, v) for p in ("fwd", "bwd")
                 for v in ("strided", "strided-gemm", "strided-shifted", "strided-winograd")]
        print(f"| {r} | " + " | ".join(fmt(c) for c in cells) + " |")
    print("\n### Configurations of the strided algorithm\n")
    print("| row | fwd 1 thread / 2 threads | bwd 1 thread / 2 threads | fwd cap / no cap | bwd cap / no cap "
          "| bwd col2im ms | bwd lowering ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f, b = median_ms(r, "fwd", "strided"), median_ms(r, "bwd", "strided")
        print(f"| {r} | {fmt(ratio(median_ms(r, 'fwd', 'strided-1t'), f), 3)} "
              f"| {fmt(ratio(median_ms(r, 'bwd', 'strided-1t'), b), 3)} "
              f"| {fmt(ratio(f, median_ms(r, 'fwd', 'strided-nocap')), 3)} "
              f"| {fmt(ratio(b, median_ms(r, 'bwd', 'strided-nocap')), 3)} "
              f"| {fmt(median_ms(r, 'bwd', 'strided-col2im'))} | {fmt(median_ms(r, 'bwd', 'strided-lowering'))} |")


def gemm_table():
    base = CRITERION / "gemm"
    if not base.exists():
        return
    ids = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "report")
    backends = ["gemm-1t", "matrixmultiply-1t", "openblas-1t", "gemm-2t", "openblas-2t"]
    print("\n### GEMM candidates on the suite's GEMM shapes (GFLOP/s, median)\n")
    print("| shape (m, n, k) | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for i in ids:
        bench = json.loads((base / i / backends[0] / "new" / "benchmark.json").read_text())
        flops = bench["throughput"]["Elements"]
        cells = []
        for b in backends:
            t = median_ms("gemm", i, b)
            cells.append(fmt(None if t is None else flops / t / 1e6))
        print(f"| {i} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    conv_tables()
    gemm_table()
