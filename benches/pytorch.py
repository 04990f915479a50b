#!/usr/bin/env python3
"""PyTorch (oneDNN) and onnxruntime (MLAS) against gemmconv on the suite
rows, in one run.

For each row, first, gemmconv's CLI builds the problem, checks every algorithm
against the naive reference, times them and writes the inputs, naive's
results and the medians of its single calls (`--save`; functional calls
that allocate their results, as PyTorch's do). This script then (after all rows, so
that PyTorch's threads do not idle beside gemmconv's) runs PyTorch on the very
same inputs, checks its forward output and dX, dW, db against gemmconv's,
and only then times it: forward under `no_grad`, backward as
`aten.convolution_backward` for dX, dW and db together (what gemmconv's
backward computes; no autograd bookkeeping). onnxruntime runs the forward
pass only (it has no training kernels for Conv in its CPU build): a
one-node Conv model with the weights and bias as initializers, checked
against gemmconv's output before it is timed; rows it cannot run (f64 Conv
has no CPU kernel) show "-". The family rows (`--family`) run
F.conv_transpose2d and F.conv1d, their backward as
`aten.convolution_backward`, and onnxruntime's ConvTranspose and 1-D Conv,
checked the same way.

    pip install torch onnxruntime onnx numpy  # PyPI's wheels; CPU is all they need
    python3 benches/pytorch.py                # every suite row
    python3 benches/pytorch.py r3x3 dw        # some rows (suite or extended ids)
    python3 benches/pytorch.py --extended     # every extended row (benches/SUITE.md)
    python3 benches/pytorch.py --family       # the family rows: conv_transpose2d, conv1d
    ROUNDS=5 python3 benches/pytorch.py       # rounds of all three (default 3), medians

The output names the CPU and gemmconv's FMA peak probe (`--peak`) before
and after the rows: on a shared machine the clock and the neighbours move
every library's figures between runs. The probe keeps its best reading,
so it shows a slower clock but not every slow stretch (BENCHMARKS.md,
"Where the many-channel small images go"): compare ratios within a run.

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
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

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


def table_ids(section):
    """The ids of the table under `## {section}` in benches/SUITE.md."""
    text = (REPO / "benches" / "SUITE.md").read_text().split(f"## {section}\n", 1)[1]
    text = text.split("\n## ", 1)[0]
    ids = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    return [i for i in ids if i and i != "id" and not i.startswith("-")]


def extended_rows():
    """The ids of the extended suite's table in benches/SUITE.md."""
    return table_ids("Extended suite")


def family_rows():
    """The ids of the family's table in benches/SUITE.md."""
    return table_ids("Family")


def onnx_model(x, w, b, spec, threads):
    """A one-node Conv model of the row, or None where onnxruntime has no
    kernel for it."""
    top, bottom, left, right = spec["padding"]
    elem = TensorProto.FLOAT if x.dtype == np.float32 else TensorProto.DOUBLE
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    node = helper.make_node(
        "Conv", ["x", "w"] + (["b"] if b is not None else []), ["y"],
        strides=spec["stride"], dilations=spec["dilation"], group=spec["groups"][0],
        pads=[top, left, bottom, right], kernel_shape=list(w.shape[2:]),
    )
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info("y", elem, None)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 (no kernel for this type)
        return None


def run_onnxruntime(row, d, threads):
    """onnxruntime's forward median on the row's inputs, after checking its
    output; None where it has no kernel."""
    load = lambda name: np.load(d / name) if (d / name).exists() else None  # noqa: E731
    x, w, b, want = (load(n) for n in ("x.npy", "w.npy", "b.npy", "y.npy"))
    model = onnx_model(x, w, b, read_spec(d / "spec.txt"), threads)
    if model is None:
        return None
    try:
        y = model.run(None, {"x": x})[0]
    except Exception:  # noqa: BLE001
        return None
    error = float(np.abs(y - want).max() / max(1.0, np.abs(want).max()))
    tolerance = 1e-4 if x.dtype == np.float32 else 1e-10
    if error > tolerance:
        sys.exit(f"{row}: onnxruntime disagrees with gemmconv (y: {error}); not timing it")
    return median_seconds(lambda: model.run(None, {"x": x}))


def cpu_model():
    """The CPU's name, family and model, as /proc/cpuinfo gives them."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "unknown CPU"
    return (f"{fields.get('model name', 'unknown CPU')} "
            f"(family {fields.get('cpu family', '?')} model {fields.get('model', '?')})")


def fma_peak(threads):
    """gemmconv's FMA peak probe, as it prints it: the machine's best FMA
    rate at the time, which on a shared machine moves between runs."""
    probe = subprocess.run(
        ["cargo", "run", "--release", "--quiet", "--", "--peak", "--threads", str(threads)],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    return probe.stdout.strip().splitlines()[-1]


def run_gemmconv(row, threads, directory):
    which = ["--family", row] if row in family_rows() else ["--row", row, "--alg", "strided"]
    subprocess.run(
        ["cargo", "run", "--release", "--quiet", "--", *which,
         "--threads", str(threads), "--save", str(directory)],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )


def read_family_spec(path):
    spec = {}
    for line in path.read_text().splitlines():
        key, *values = line.split()
        spec[key] = values[0] if key == "op" else [int(v) for v in values]
    return spec


def family_onnx_model(x, w, b, spec, threads):
    """A one-node ConvTranspose or 1-D Conv model of a family row."""
    transposed = spec["op"] == "transposed"
    pads = spec["padding"] * 2 if transposed else [spec["padding"][0], spec["padding"][1]]
    attributes = dict(strides=spec["stride"], dilations=spec["dilation"],
                      group=spec["groups"][0], pads=pads, kernel_shape=list(w.shape[2:]))
    if transposed:
        attributes["output_padding"] = spec["output_padding"]
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    node = helper.make_node("ConvTranspose" if transposed else "Conv",
                            ["x", "w"] + (["b"] if b is not None else []), ["y"], **attributes)
    graph = helper.make_graph(
        [node], "family", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run_family(row, d, threads):
    """PyTorch's forward and backward and onnxruntime's forward on a family
    row's inputs, each checked against gemmconv's results first."""
    load = lambda name: np.load(d / name) if (d / name).exists() else None  # noqa: E731
    x_np, w_np, b_np, dy_np = (load(n) for n in ("x.npy", "w.npy", "b.npy", "dy.npy"))
    want = {n: load(n + ".npy") for n in ("y", "dx", "dw", "db")}
    spec = read_family_spec(d / "spec.txt")
    ours = (d / "times.txt").read_text().split()
    ours_fwd, ours_bwd = float(ours[1]), float(ours[2])
    x, w, dy = (torch.from_numpy(a) for a in (x_np, w_np, dy_np))
    b = torch.from_numpy(b_np) if b_np is not None else None
    stride, padding, dilation = spec["stride"], spec["padding"], spec["dilation"]
    groups = spec["groups"][0]
    transposed = spec["op"] == "transposed"
    output_padding = spec.get("output_padding", [0] * len(stride))
    if not transposed:
        padding = padding[:1]  # symmetric: checked below
        assert spec["padding"][0] == spec["padding"][1]

    def forward():
        if transposed:
            return F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
        return F.conv1d(x, w, b, stride, padding, dilation, groups)

    def backward():
        bias_sizes = [b.shape[0]] if b is not None else None
        return torch.ops.aten.convolution_backward(
            dy, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding, groups,
            [True, True, b is not None],
        )

    with torch.no_grad():
        y = forward()
        dx, dw, db = backward()
        errors = [relative_error(y, want["y"]), relative_error(dx, want["dx"]),
                  relative_error(dw, want["dw"])]
        if db is not None:
            errors.append(relative_error(db, want["db"]))
        if max(errors) > 1e-4:
            sys.exit(f"{row}: PyTorch disagrees with gemmconv (y, dx, dw, db: {errors}); "
                     "not timing it")
        fwd = median_seconds(forward)
        bwd = median_seconds(backward)
    model = family_onnx_model(x_np, w_np, b_np, spec, threads)
    y_ort = model.run(None, {"x": x_np})[0]
    error = float(np.abs(y_ort - want["y"]).max() / max(1.0, np.abs(want["y"]).max()))
    if error > 1e-4:
        sys.exit(f"{row}: onnxruntime disagrees with gemmconv (y: {error}); not timing it")
    ort_fwd = median_seconds(lambda: model.run(None, {"x": x_np}))
    return fwd, bwd, ours_fwd, ours_bwd, max(errors + [error]), ort_fwd


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
    args = sys.argv[1:]
    named = {"--extended": extended_rows, "--family": family_rows}
    rows = named[args[0]]() if args and args[0] in named else (args or ROWS)
    threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    rounds = int(os.environ.get("ROUNDS", 3))
    torch.set_num_threads(threads)
    print(f"PyTorch {torch.__version__}, oneDNN {torch.backends.mkldnn.is_available()}, "
          f"{torch.get_num_threads()} threads; onnxruntime {ort.__version__}, {threads} "
          f"threads; gemmconv: strided, {threads} threads; medians of {rounds} rounds")
    print(f"{cpu_model()}; before the rows: {fma_peak(threads)}")
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
                if row in family_rows():
                    samples[row].append(run_family(row, Path(tmp) / row, threads))
                    continue
                samples[row].append(run_pytorch(row, Path(tmp) / row))
                ort_fwd = run_onnxruntime(row, Path(tmp) / row, threads)
                samples[row][-1] += (ort_fwd if ort_fwd is not None else float("nan"),)
    print()
    print("| row | gemmconv fwd ms | PyTorch fwd ms | onnxruntime fwd ms | fwd / PyTorch "
          "| fwd / onnxruntime | gemmconv bwd ms | PyTorch bwd ms | bwd / PyTorch "
          "| gemmconv / best | max rel. error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    best_ratios = []
    for row in rows:
        fwd, bwd, ours_fwd, ours_bwd = (float(np.median([s[k] for s in samples[row]]))
                                        for k in range(4))
        ort_fwd = float(np.median([s[5] for s in samples[row]]))
        error = max(s[4] for s in samples[row])
        has_ort = not np.isnan(ort_fwd)
        best_fwd = min(fwd, ort_fwd) if has_ort else fwd
        # gemmconv against the best framework, forward and backward together.
        best = (ours_fwd + ours_bwd) / (best_fwd + bwd)
        best_ratios.append(best)
        results[row] = {"pytorch_fwd_ms": fwd * 1e3, "pytorch_bwd_ms": bwd * 1e3,
                        "onnxruntime_fwd_ms": ort_fwd * 1e3 if has_ort else None,
                        "gemmconv_fwd_ms": ours_fwd * 1e3, "gemmconv_bwd_ms": ours_bwd * 1e3,
                        "max_rel_error": error}
        ort_cells = (f"{ort_fwd * 1e3:.3g} | {ours_fwd / ort_fwd:.2f}" if has_ort else "- | -")
        print(f"| {row} | {ours_fwd * 1e3:.3g} | {fwd * 1e3:.3g} | {ort_cells.split(' | ')[0]} "
              f"| {ours_fwd / fwd:.2f} | {ort_cells.split(' | ')[1]} | {ours_bwd * 1e3:.3g} "
              f"| {bwd * 1e3:.3g} | {ours_bwd / bwd:.2f} | {best:.2f} | {error:.1e} |")
    print()
    geomean = float(np.exp(np.mean(np.log(best_ratios))))
    print("ratios = gemmconv time / theirs (below 1: gemmconv is faster); medians. "
          "gemmconv / best: forward plus backward against the fastest framework's "
          f"forward plus PyTorch's backward. Geometric mean of it: {geomean:.2f}.")
    print(f"After the rows: {fma_peak(threads)}")
    out = REPO / "target" / ("pytorch-family.json" if args == ["--family"] else "pytorch.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out.relative_to(REPO)} (read by benches/report.py)")


if __name__ == "__main__":
    main()
