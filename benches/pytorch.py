#!/usr/bin/env python3
"""PyTorch (oneDNN) against gemmconv on the suite rows, in one run.

For each row, first, gemmconv's CLI builds the problem, checks every algorithm
against the naive reference, times them and writes the inputs, naive's
results and its medians (`--save`; functional calls that allocate their
results, as PyTorch's do). This script then (after all rows, so
that PyTorch's threads do not idle beside gemmconv's) runs PyTorch on the very
same inputs, checks its forward output and dX, dW, db against gemmconv's,
and only then times it: forward under `no_grad`, backward as
`aten.convolution_backward` for dX, dW and db together (what gemmconv's
backward computes; no autograd bookkeeping).

    pip install torch numpy            # PyPI's wheel; CPU is all it needs here
    python3 benches/pytorch.py         # every row
    python3 benches/pytorch.py r3x3 dw # some rows
    ROUNDS=5 python3 benches/pytorch.py # rounds of both (default 3), medians

The medians also go to target/pytorch.json, where benches/report.py finds
them for BENCHMARKS.md.

glibc's malloc returns each call's large output to the kernel and maps it
afresh, which made PyTorch's timings vary up to 2.4x between processes; the
script re-executes itself with thresholds that keep that memory (as a
long-running training process would), which made them steady. The mmap
threshold is glibc's maximum, 32 MiB; gemmconv's CLI sets the same two
values itself (cli/src/malloc.rs).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
if any(os.environ.get(k) != v for k, v in MALLOC.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC})

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROWS = ["seed", "seed64", "r3x3", "r3x3s2", "r1x1", "stem", "dw", "dil"]
REPO = Path(__file__).resolve().parent.parent


def median_seconds(f, min_reps=11, min_seconds=1.0):
    """Median of at least `min_reps` timings (and about `min_seconds` of
    them), after three warm-up calls."""
    for _ in range(3):
        f()
    once = time.perf_counter()
    f()
    once = time.perf_counter() - once
    reps = max(min_reps, min(200, int(min_seconds / max(once, 1e-9))))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def relative_error(got, want):
    got = got.detach().double().numpy()
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))


def read_spec(path):
    spec = {}
    for line in path.read_text().splitlines():
        key, *values = line.split()
        spec[key] = [int(v) for v in values]
    return spec


def run_gemmconv(row, threads, directory):
    subprocess.run(
        ["cargo", "run", "--release", "--quiet", "--", "--row", row, "--alg", "strided",
         "--threads", str(threads), "--save", str(directory)],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )


def run_pytorch(row, d):
    load = lambda name: np.load(d / name) if (d / name).exists() else None  # noqa: E731
    x, w, b, dy = (load(n) for n in ("x.npy", "w.npy", "b.npy", "dy.npy"))
    want = {n: load(n + ".npy") for n in ("y", "dx", "dw", "db")}
    spec = read_spec(d / "spec.txt")
    ours = (d / "times.txt").read_text().split()
    ours_fwd, ours_bwd = float(ours[1]), float(ours[2])

    stride, dilation, groups = spec["stride"], spec["dilation"], spec["groups"][0]
    top, bottom, left, right = spec["padding"]
    x, w, dy = (torch.from_numpy(a) for a in (x, w, dy))
    b = torch.from_numpy(b) if b is not None else None
    if top == bottom and left == right:
        padding, pad_input = [top, left], lambda t: t
    else:
        padding, pad_input = [0, 0], lambda t: F.pad(t, (left, right, top, bottom))

    def forward():
        return F.conv2d(pad_input(x), w, b, stride, padding, dilation, groups)

    def backward(x_in):
        return torch.ops.aten.convolution_backward(
            dy, x_in, w, [w.shape[0]], stride, padding, dilation, False, [0, 0], groups,
            [True, True, True],
        )

    with torch.no_grad():
        y = forward()
        x_in = pad_input(x)
        dx, dw, db = backward(x_in)
        if x_in is not x:  # the gradient of the padded input, cropped
            dx = dx[:, :, top:top + x.shape[2], left:left + x.shape[3]]
        errors = [relative_error(y, want["y"]), relative_error(dx, want["dx"]),
                  relative_error(dw, want["dw"]), relative_error(db, want["db"])]
        tolerance = 1e-4 if x.dtype == torch.float32 else 1e-10
        if max(errors) > tolerance:
            sys.exit(f"{row}: PyTorch disagrees with gemmconv (y, dx, dw, db: {errors}); "
                     "not timing it")
        fwd = median_seconds(forward)
        bwd = median_seconds(lambda: backward(x_in))
    return fwd, bwd, ours_fwd, ours_bwd, max(errors)


def main():
    rows = sys.argv[1:] or ROWS
    threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    rounds = int(os.environ.get("ROUNDS", 3))
    torch.set_num_threads(threads)
    print(f"PyTorch {torch.__version__}, oneDNN {torch.backends.mkldnn.is_available()}, "
          f"{torch.get_num_threads()} threads; gemmconv: strided, {threads} threads; "
          f"medians of {rounds} rounds")
    samples = {row: [] for row in rows}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            # gemmconv first, every row, so that PyTorch's idle OpenMP threads
            # are not yet there to take cycles from it; then PyTorch. Rounds
            # alternate the two, so that a burst of load on this shared
            # machine does not fall on one library only.
            for row in rows:
                run_gemmconv(row, threads, Path(tmp) / row)
            for row in rows:
                samples[row].append(run_pytorch(row, Path(tmp) / row))
    print()
    print("| row | gemmconv fwd ms | PyTorch fwd ms | fwd ratio | gemmconv bwd ms "
          "| PyTorch bwd ms | bwd ratio | max rel. error |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for row in rows:
        fwd, bwd, ours_fwd, ours_bwd = (float(np.median([s[k] for s in samples[row]]))
                                        for k in range(4))
        error = max(s[4] for s in samples[row])
        results[row] = {"pytorch_fwd_ms": fwd * 1e3, "pytorch_bwd_ms": bwd * 1e3,
                        "gemmconv_fwd_ms": ours_fwd * 1e3, "gemmconv_bwd_ms": ours_bwd * 1e3,
                        "max_rel_error": error}
        print(f"| {row} | {ours_fwd * 1e3:.3g} | {fwd * 1e3:.3g} | {ours_fwd / fwd:.2f} "
              f"| {ours_bwd * 1e3:.3g} | {bwd * 1e3:.3g} | {ours_bwd / bwd:.2f} | {error:.1e} |")
    print()
    print("ratio = gemmconv time / PyTorch time (below 1: gemmconv is faster); medians.")
    out = REPO / "target" / "pytorch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out.relative_to(REPO)} (read by benches/report.py)")


if __name__ == "__main__":
    main()
