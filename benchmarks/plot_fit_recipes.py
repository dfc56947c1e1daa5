"""IoU and F-score against CPU time per fit recipe: docs/images/fit_recipes.png.

    python benchmarks/plot_fit_recipes.py RESULTS.json [RESULTS.json ...] --labels "built-in chairs" ...

Each RESULTS.json is what benchmarks/fit_recipes.py wrote (one row per recipe and budget);
one row of panels per file: evaluation-set volume IoU, F-score at 1 %, held-out uniform IoU,
each against the process CPU seconds per shape. Rows with a `curve` (fit_recipes.py
--curve-every) are drawn as that curve (F-scores from its coarser meshes), with the end
point's own scores as a star.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("eval_iou", "evaluation-set IoU"), ("fscore", "F-score @ 1 %"), ("iou_uniform", "held-out uniform IoU"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--out", default="docs/images/fit_recipes.png")
    args = ap.parse_args()
    labels = args.labels or [Path(r).stem for r in args.results]
    fig, axes = plt.subplots(len(args.results), len(PANELS), figsize=(4.2 * len(PANELS), 3.4 * len(args.results)),
                             squeeze=False)
    for row, (path, label) in enumerate(zip(args.results, labels)):
        rows = json.loads(Path(path).read_text())
        by_recipe = defaultdict(list)
        for r in rows:
            by_recipe[r["recipe"]].append(r)
        for col, (key, title) in enumerate(PANELS):
            ax = axes[row, col]
            for recipe, rs in by_recipe.items():
                rs = sorted(rs, key=lambda r: r["cpu_s"])
                n = len(rs[0]["shapes"])
                width = 2.5 if recipe == "paper" else 1.5
                curves = [r["curve"] for r in rs if r.get("curve") and key in r["curve"][0]]
                if curves:
                    for i, c in enumerate(curves):
                        line, = ax.plot([q["cpu_s"] / n for q in c], [q[key] for q in c], "o-", ms=3, lw=width,
                                        label=recipe if i == 0 else None)
                        ax.plot([r["cpu_s"] / n for r in rs], [r[key] for r in rs], "*", ms=11, color=line.get_color())
                else:
                    ax.plot([r["cpu_s"] / n for r in rs], [r[key] for r in rs], "o-", label=recipe, lw=width)
            ax.set_xlabel("CPU seconds per shape")
            res = sorted({(r["curve"][0]["mesh_res"], r.get("mesh_res")) for r in rows if r.get("curve")})
            if key == "fscore" and res and res[0][1]:
                title += f" (lines: {res[0][0]}³ meshes, ★: {res[0][1]}³)"
            ax.set_title(f"{label}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
