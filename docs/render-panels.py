#!/usr/bin/env python3
"""Draws the main kvstore dashboard panels from Prometheus range data, for the docs.

The data comes from the observability e2e suite, which runs a real Prometheus
against a local cluster (all up, then node n3 killed, then n3 back, then n4
joins and partitions stream to it):

    KVSTORE_PANEL_DUMP=/tmp/panels.json npx jest e2e/observability.test.ts
    python3 docs/render-panels.py /tmp/panels.json docs/dashboard-panels.png

Needs matplotlib (pip install matplotlib); the tests do not.
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNITS = {
    "reqps": "req/s",
    "ops": "per s",
    "s": "seconds",
    "bytes": "bytes",
    "Bps": "bytes/s",
    "percentunit": "ratio",
    "short": "",
}


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt) or ",".join(
        f"{k}={v}" for k, v in metric.items()
    )


def main(src, dest):
    with open(src) as f:
        dump = json.load(f)
    panels = dump["panels"]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.2 * rows), squeeze=False)
    start = dump["start"]
    for ax, panel in zip(axes.flat, panels):
        for s in panel["series"]:
            xs, ys = [], []
            for t, v in s["values"]:
                # A gap in the data (the series' target was down) stays a gap, as Grafana draws it.
                if xs and float(t) - start - xs[-1] > 1.5:
                    xs.append(xs[-1] + 1)
                    ys.append(float("nan"))
                xs.append(float(t) - start)
                ys.append(float(v))
            ax.plot(xs, ys, linewidth=1.4, label=legend(s["legend"], s["metric"]))
        ax.set_title(f'{panel["title"]}  ({panel["dashboard"]})', fontsize=10)
        ax.set_ylabel(UNITS.get(panel.get("unit") or "short", ""), fontsize=8)
        ax.set_xlabel("seconds into the run", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("kvstore dashboards on a local cluster: all up, n3 killed, n3 back, n4 joins", fontsize=12)
    fig.tight_layout()
    fig.savefig(dest, dpi=90)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: render-panels.py PANEL_DUMP.json OUT.png")
    main(sys.argv[1], sys.argv[2])
