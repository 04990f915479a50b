#!/usr/bin/env python3
"""BENCHMARKS.md's headline: every suite row, gemmconv forward and backward
against PyTorch, candle and burn (flex), as a table (written between the
`<!-- headline -->` markers of BENCHMARKS.md) and a chart
(`benches/headline.svg`). Run after the three measurements:

    cargo bench --bench conv -- '/strided$'    # gemmconv (criterion)
    python3 benches/pytorch.py                 # PyTorch, same run as gemmconv
    (cd peers && cargo run --release)          # candle and burn, same run as gemmconv
    python3 benches/headline.py

Each ratio is gemmconv's time over the other library's, both measured in
the same run by the program that timed the other library (below 1:
gemmconv is faster). The peers compute gradients through autodiff only, so
their backward is the training step (forward, then dX, dW, db) less the
forward, for gemmconv as for them.
"""

import json
import math
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
ROWS = ["seed", "seed64", "r3x3", "r3x3s2", "r1x1", "stem", "dw", "dil"]
PEERS = {"candle": "candle-core", "burn flex": "burn 0.22 flex"}


def criterion_ms(row, passname):
    path = TARGET / "criterion" / row / passname / "strided" / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e6


def load(name):
    path = TARGET / name
    if not path.exists():
        sys.exit(f"{path.relative_to(ROOT)} is missing: run the measurement that writes it first")
    return json.loads(path.read_text())


def peer(results, row, prefix):
    """(fwd ms, bwd ms, gemmconv fwd ms, gemmconv bwd ms) of a peer's run."""
    libraries = results.get(row, {})
    name = next((k for k in libraries if k.startswith(prefix)), None)
    if name is None or "gemmconv" not in libraries:
        return None
    (fwd, step), (ours_fwd, ours_step) = libraries[name], libraries["gemmconv"]
    return fwd, step - fwd, ours_fwd, ours_step - ours_fwd


def figures():
    torch, peers = load("pytorch.json"), load("peers.json")
    out = {}
    for row in ROWS:
        entry = {"gemmconv": (criterion_ms(row, "fwd"), criterion_ms(row, "bwd"))}
        if row in torch:
            t = torch[row]
            entry["PyTorch"] = (t["pytorch_fwd_ms"], t["pytorch_bwd_ms"],
                                t["gemmconv_fwd_ms"], t["gemmconv_bwd_ms"])
        for label, prefix in PEERS.items():
            # The peers run f32 only: seed64 would repeat seed.
            found = peer(peers, row, prefix)
            if found:
                entry[label] = found
        out[row] = entry
    return out


def ms(value):
    """Three significant figures, without an exponent."""
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def cell(other, pass_index):
    if other is None:
        return "–"
    theirs, ours = other[pass_index], other[2 + pass_index]
    return f"{ms(theirs)} ({ours / theirs:.2f})"


def table(data):
    others = ["PyTorch", *PEERS]
    head = ["row", "gemmconv fwd ms", *(f"{o} fwd" for o in others),
            "gemmconv bwd ms", *(f"{o} bwd" for o in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, entry in data.items():
        fwd, bwd = entry["gemmconv"]
        cells = [row, ms(fwd), *(cell(entry.get(o), 0) for o in others),
                 ms(bwd), *(cell(entry.get(o), 1) for o in others)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(data):
    """Grouped bars on a log scale: gemmconv's time over each library's,
    forward and backward, per row; below the line at 1, gemmconv is faster."""
    others = ["PyTorch", *PEERS]
    colours = {"PyTorch": "#d62728", "candle": "#1f77b4", "burn flex": "#ff7f0e"}
    bars = [(o, p) for o in others for p in (0, 1)]
    lo, hi = math.log10(0.01), math.log10(2.0)
    width, height, left, top, bottom = 900, 380, 60, 40, 60
    plot_h = height - top - bottom
    group_w = (width - left - 20) / len(data)
    bar_w = group_w * 0.8 / len(bars)

    def y(ratio):
        v = min(max(math.log10(ratio), lo), hi)
        return top + (hi - v) / (hi - lo) * plot_h

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">gemmconv time / other library\'s time '
           '(log scale; below 1: gemmconv faster). Solid: forward, light: backward.</text>']
    for tick in (0.01, 0.03, 0.1, 0.3, 1, 2):
        ty = y(tick)
        svg.append(f'<line x1="{left}" x2="{width - 20}" y1="{ty:.1f}" y2="{ty:.1f}" '
                   f'stroke="{"#000" if tick == 1 else "#ddd"}"/>')
        svg.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for g, (row, entry) in enumerate(data.items()):
        x0 = left + g * group_w + group_w * 0.1
        for b, (other, pass_index) in enumerate(bars):
            found = entry.get(other)
            if found is None:
                continue
            ratio = found[2 + pass_index] / found[pass_index]
            x = x0 + b * bar_w
            top_y, base_y = sorted((y(ratio), y(1)))
            opacity = 1.0 if pass_index == 0 else 0.45
            svg.append(f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bar_w * 0.9:.1f}" '
                       f'height="{max(base_y - top_y, 1):.1f}" fill="{colours[other]}" '
                       f'fill-opacity="{opacity}"><title>{row} {other} '
                       f'{"fwd" if pass_index == 0 else "bwd"}: {ratio:.2f}</title></rect>')
        svg.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - bottom + 18}" '
                   f'text-anchor="middle">{row}</text>')
    for k, other in enumerate(others):
        lx = left + k * 140
        svg.append(f'<rect x="{lx}" y="{height - 24}" width="12" height="12" '
                   f'fill="{colours[other]}"/>')
        svg.append(f'<text x="{lx + 18}" y="{height - 14}">{other}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main():
    data = figures()
    text = table(data)
    (ROOT / "benches" / "headline.svg").write_text(chart(data))
    bench = ROOT / "BENCHMARKS.md"
    doc = bench.read_text()
    marked = re.compile(r"(<!-- headline -->\n).*?(\n<!-- /headline -->)", re.S)
    if not marked.search(doc):
        sys.exit("BENCHMARKS.md has no <!-- headline --> ... <!-- /headline --> block")
    bench.write_text(marked.sub(lambda m: m.group(1) + text + m.group(2), doc))
    print(text)
    print("\nwritten to BENCHMARKS.md and benches/headline.svg")


if __name__ == "__main__":
    main()
