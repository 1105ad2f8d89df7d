#!/usr/bin/env python3
"""Draw grouped horizontal bar charts of ratios as a standalone SVG file.

    chart.py CHART.json OUT.svg

CHART.json:
    {"title": "...", "series": ["nginx", "lighttpd", "yardstick"],
     "panels": [{"title": "...", "groups": [
         {"label": "13 B file, 100 connections",
          "bars": [{"series": "nginx", "value": 1.23}, ...]}, ...]}, ...]}

A value of null is drawn as "n/a".  The axis is logarithmic and bars grow
from the dashed parity line at 1.0, so 0.5 and 2 are equally long.
No third-party packages: the SVG is written by hand.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2"]
WIDTH = 960
LABEL_W = 230
PLOT_W = WIDTH - LABEL_W - 60
BAR_H = 14
BAR_GAP = 3
GROUP_GAP = 12
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


def domain(vals):
    """Log-scale domain [lo, hi] on tick values, always containing 0.5..2."""
    lo = min(vals + [0.5]) / 1.15
    hi = max(vals + [2.0]) * 1.15
    lo = max([t for t in TICKS if t <= lo] or [TICKS[0]])
    hi = min([t for t in TICKS if t >= hi] or [TICKS[-1]])
    return lo, hi


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
            f"font-weight='{weight}' fill='{fill}' {FONT}>{escape(str(s))}</text>")


def render(chart):
    series = chart.get("series", [])
    color = {s: COLORS[i % len(COLORS)] for i, s in enumerate(series)}
    out = []
    y = 30
    out.append(text(WIDTH / 2, y, chart.get("title", ""), 16, "middle", "bold"))
    y += 22
    # legend
    lx = LABEL_W
    for s in series:
        out.append(f"<rect x='{lx}' y='{y - 10}' width='12' height='12' fill='{color[s]}'/>")
        out.append(text(lx + 16, y, s, 12))
        lx += 30 + 8 * len(s)
    y += 18

    for panel in chart.get("panels", []):
        groups = panel.get("groups", [])
        vals = [b["value"] for g in groups for b in g["bars"] if b.get("value")]
        lo, hi = domain(vals)
        span = math.log10(hi) - math.log10(lo)

        def xpos(v):
            v = min(max(v, lo), hi)
            return LABEL_W + (math.log10(v) - math.log10(lo)) / span * PLOT_W

        x1 = xpos(1.0)
        y += 22
        out.append(text(LABEL_W, y, panel.get("title", ""), 13, "start", "bold"))
        y += 12
        top = y
        grid_at = len(out)
        for g in groups:
            bars = g["bars"]
            gh = len(bars) * (BAR_H + BAR_GAP) - BAR_GAP
            out.append(text(LABEL_W - 10, y + gh / 2 + 4, g["label"], 12, "end"))
            for b in bars:
                v = b.get("value")
                c = color.get(b["series"], "#999")
                if not v:
                    out.append(text(x1 + 4, y + BAR_H - 3, f"{b['series']}: n/a", 10, fill="#888"))
                else:
                    xv = xpos(v)
                    left, w = min(x1, xv), max(abs(xv - x1), 1)
                    out.append(f"<rect x='{left:.1f}' y='{y}' width='{w:.1f}' height='{BAR_H}' fill='{c}'>"
                               f"<title>{escape(b['series'])}: {v:.3f}</title></rect>")
                    if xv >= x1:
                        out.append(text(xv + 4, y + BAR_H - 3, f"{v:.2f}", 10))
                    else:
                        out.append(text(xv - 4, y + BAR_H - 3, f"{v:.2f}", 10, "end"))
                y += BAR_H + BAR_GAP
            y += GROUP_GAP - BAR_GAP
        bottom = y
        # axis, ticks and the parity line (bars grow from 1.0, log scale)
        out.append(f"<line x1='{LABEL_W}' y1='{bottom}' x2='{LABEL_W + PLOT_W}' y2='{bottom}' stroke='#444'/>")
        grid = []
        for tv in TICKS:
            if lo <= tv <= hi:
                tx = xpos(tv)
                grid.append(f"<line x1='{tx:.1f}' y1='{top - 4}' x2='{tx:.1f}' y2='{bottom}' stroke='#e4e4e4'/>")
                out.append(f"<line x1='{tx:.1f}' y1='{bottom}' x2='{tx:.1f}' y2='{bottom + 4}' stroke='#444'/>")
                out.append(text(tx, bottom + 16, f"{tv:g}×", 10, "middle"))
        out.append(f"<line x1='{x1:.1f}' y1='{top - 4}' x2='{x1:.1f}' y2='{bottom}' stroke='#000' "
                   f"stroke-dasharray='4 3'/>")
        out[grid_at:grid_at] = grid  # under the bars
        y = bottom + 30

    height = y + 10
    head = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
            f"viewBox='0 0 {WIDTH} {height}'>")
    return "\n".join([head, f"<rect width='{WIDTH}' height='{height}' fill='white'/>"] + out + ["</svg>"]) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        chart = json.load(f)
    with open(sys.argv[2], "w") as f:
        f.write(render(chart))


if __name__ == "__main__":
    main()
