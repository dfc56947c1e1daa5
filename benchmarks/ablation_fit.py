"""The paper's two fitting ablations at CPU scale: positional encoding on/off x first-weights/random init.

HyperDiffusion (Sec. 4, ablations) reports that NeRF positional encoding and initialising every
MLP from the first fitted one both help generation. For each of the 2 x 2 variants this fits
one MLP per built-in chair (`fit --multires 4|0 --init first|random`), scores the fits on the
evaluation set (volume IoU, F-score at 1 %), trains a small diffusion model on the weights
(the `cpu` train preset, few steps), samples, and scores the samples against the test split
(1-NNA-CD) and against the training shapes (copy rate). Every stage resumes.

    python benchmarks/ablation_fit.py OUT [--count 40 --limit 16 --fit-epochs 12 --train-steps 300 --n-samples 12]

Writes OUT/<variant>/row.json and prints a markdown table (benchmarks/RESULTS.md, "Fit evaluation").
Variants can run as separate processes into one OUT (--variants), then `--table` prints them all.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from hyperdiffusion.fields.mlp import MLPConfig

VARIANTS = {  # name: (multires, init)
    "PE + first weights (paper)": (4, "first"),
    "PE + random init": (4, "random"),
    "no PE + first weights": (0, "first"),
    "no PE + random init": (0, "random"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=40, help="built-in chairs (80/5/15 split)")
    ap.add_argument("--limit", type=int, default=None, help="fit and train on the first N train chairs only")
    ap.add_argument("--samples", type=int, default=8_000, help="near-surface and uniform training samples each")
    ap.add_argument("--fit-epochs", type=int, default=30, help="`cpu` fit preset epochs (25 steps of 1024 points)")
    ap.add_argument("--train-steps", type=int, default=800)
    ap.add_argument("--n-samples", type=int, default=16)
    ap.add_argument("--res", type=int, default=64, help="marching cubes for the fit scores and the samples")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(f"pe{m}_{i}" for m, i in VARIANTS.values()),
                    help="which runs (several processes can share OUT, one variant each)")
    ap.add_argument("--table", action="store_true", help="only print the table of the finished runs in OUT")
    args = ap.parse_args()
    if args.table:
        return print_table(Path(args.out))
    torch.set_num_threads(args.threads)

    from hyperdiffusion.data.prepare import PrepareConfig, prepare
    from hyperdiffusion.diffusion.sample import SampleConfig, sample
    from hyperdiffusion.diffusion.train import TRAIN_PRESETS, train
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate
    from hyperdiffusion.fields.fit import PRESETS, fit_dataset
    from hyperdiffusion.fields.fit_eval import ScoreConfig
    from hyperdiffusion.io import InputError

    out = Path(args.out)
    data = out / "data"
    prep = PrepareConfig(n_surface=args.samples, n_uniform=args.samples, n_eval_shell=6_000, n_eval_far=3_000,
                         n_eval_surface=3_000, workers=1)
    prepare("builtin:chair", data, prep, count=args.count, progress=False)
    for name, (multires, init) in VARIANTS.items():
        run = out / f"pe{multires}_{init}"
        if run.name not in args.variants.split(","):
            continue
        row: dict = {"multires": multires, "init": init}
        t = time.perf_counter()
        fit_cfg = replace(PRESETS["cpu"], max_epochs=args.fit_epochs, init=init)
        weights = fit_dataset(data, run / "mlps", fit_cfg, MLPConfig(multires=multires), split="train",
                              device="cpu", limit=args.limit, progress=False,
                              scores=ScoreConfig(mesh_res=args.res, n_points=20_000))
        row["fit_seconds"] = round(time.perf_counter() - t, 1)
        row.update(fit_row(json.loads((run / "mlps" / "fit_quality.json").read_text())["summary"]))
        t = time.perf_counter()
        train_cfg = replace(TRAIN_PRESETS["cpu"], max_steps=args.train_steps, seed=0, device="cpu")
        train(weights, run / "diffusion", train_cfg, progress=False)
        sample(run / "diffusion" / "checkpoints" / "last.safetensors", run / "samples",
               SampleConfig(n=args.n_samples, steps=50, batch_size=args.n_samples, seed=0, res=args.res, device="cpu"),
               progress=False)
        row["n_params"] = MLPConfig(multires=multires).n_params
        try:
            metrics = evaluate(run / "samples", data, EvalConfig(emd="off", split="test", train=str(data),
                                                                 fpd_net=None, device="cpu"), progress=False)
            row.update(nna_cd=metrics["nna_cd"], mmd_cd=metrics["mmd_cd"], cov_cd=metrics["cov_cd"],
                       copy_rate=metrics["novelty"]["copy_rate"], scored=metrics["sample_counts"]["with_cloud"])
        except InputError as e:  # e.g. every sample empty: nothing to score
            row.update(nna_cd=float("nan"), mmd_cd=float("nan"), cov_cd=float("nan"), copy_rate=float("nan"),
                       scored=0, error=str(e))
        row["train_sample_eval_seconds"] = round(time.perf_counter() - t, 1)
        (run / "row.json").write_text(json.dumps({"name": name, "args": vars(args), **row}, indent=2))
        print(name, row, flush=True)
    print_table(out)


def fit_row(summary: dict) -> dict:
    """The fit columns from a fit_quality.json summary."""
    e = summary["eval"]
    return {"heldout_iou": summary["iou_uniform"]["mean"], "eval_iou": e["eval_iou"]["mean"],
            "eval_iou_min": e["eval_iou"]["min"], "fscore": e["fscore"]["mean"], "chamfer_l1": e["chamfer_l1"]["mean"]}


def print_table(out: Path) -> None:
    """The markdown table of the variants in OUT: finished ones from row.json; ones still training
    from their fit_quality.json, with the diffusion columns blank."""
    rows = {}
    for name, (multires, init) in VARIANTS.items():
        run = out / f"pe{multires}_{init}"
        if (run / "row.json").is_file():
            rows[name] = json.loads((run / "row.json").read_text())
        elif (run / "mlps" / "fit_quality.json").is_file():
            summary = json.loads((run / "mlps" / "fit_quality.json").read_text())["summary"]
            rows[name] = {"n_params": MLPConfig(multires=multires).n_params, **fit_row(summary)}
    print("| variant | MLP params | held-out IoU | eval-set IoU (min) | F-score@1% | Chamfer-L1 | 1-NNA-CD | "
          "MMD-CD | COV-CD | copy rate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        gen = " | ".join(f"{r[k]:{f}}" if k in r else "not run" for k, f in
                         (("nna_cd", ".3f"), ("mmd_cd", ".4f"), ("cov_cd", ".3f"), ("copy_rate", ".2f")))
        print(f"| {name} | {r['n_params']:,} | {r['heldout_iou']:.3f} | {r['eval_iou']:.3f} ({r['eval_iou_min']:.3f}) | "
              f"{r['fscore']:.3f} | {r['chamfer_l1']:.4f} | {gen} |")


if __name__ == "__main__":
    main()
