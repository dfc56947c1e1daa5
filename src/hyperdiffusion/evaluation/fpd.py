"""Fréchet PointNet++ Distance (FPD) and the classifier whose features it uses.

FPD (Shu et al. 2019; HyperDiffusion Sec. 4, REFERENCE.md "Evaluation") is FID
for point clouds: embed every cloud with a point-cloud classifier, fit a Gaussian
to each set of embeddings and take the Fréchet distance between the two
Gaussians. The official code uses PointNet++ SSG without normals trained on
ModelNet40 (yanx27/Pointnet_Pointnet2_pytorch, `pointnet2_ssg_wo_normals`) and the
256-d activations after fc2 -> bn2 -> ReLU in eval mode.

`PointNet2SSG` below re-implements that network with the same module names and
tensor shapes, so the public checkpoint (`best_model.pth`, key
`model_state_dict`) loads into it. That checkpoint cannot be downloaded here, so
`hyperdiffusion fpd-train` trains the same network (optionally narrower) on
prepared datasets, and the package ships one such network, `DEFAULT_NET`, which
`evaluate` uses unless told otherwise (docs/EVALUATION.md "The shipped network").
FPD values are comparable only when computed with the same network: every value
is reported with the network's id (a hash of its weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyperdiffusion.io import (InputError, load_npy, load_safetensors, read_json, save_safetensors,
                               write_json)

NET_FORMAT = "hyperdiffusion-fpd-net"
# The network `evaluate` uses unless told otherwise: trained by `fpd-train` with the recipe in
# docs/EVALUATION.md "FPD" and shipped inside the package (pyproject.toml package-data).
DEFAULT_NET = Path(__file__).with_name("fpd_net") / "fpd_net.safetensors"
DEFAULT_NET_NAME = "hyperdiffusion/evaluation/fpd_net/fpd_net.safetensors"
MIN_CLOUDS = 2  # a Gaussian's covariance needs two samples per set


# ---------------------------------------------------------------------------
# PointNet++ SSG (Qi et al. 2017), module names as in yanx27's pointnet2_cls_ssg
# ---------------------------------------------------------------------------

def farthest_point_sample(xyz: torch.Tensor, npoint: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [B, npoint] of a farthest-point sampling of xyz [B, N, 3].

    Starts at a random point as the reference code does (which makes FPD
    slightly random, REFERENCE.md); pass a seeded `generator` for repeatable values.
    On CPU the loop runs on one thread: its operations are so small that thread
    hand-offs cost more than they save (0.1 s vs 3-10 s for 8 x 2048 points on the
    loaded 2-core dev machine).
    """
    b, n, _ = xyz.shape
    threads = torch.get_num_threads()
    if xyz.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        idx = torch.empty(b, npoint, dtype=torch.long, device=xyz.device)
        nearest = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
        current = torch.randint(0, n, (b,), generator=generator, device="cpu").to(xyz.device)
        coords = xyz.transpose(1, 2).contiguous()  # [B, 3, N]
        for i in range(npoint):
            idx[:, i] = current
            centre = torch.gather(coords, 2, current.view(b, 1, 1).expand(b, 3, 1))
            torch.minimum(nearest, ((coords - centre) ** 2).sum(1), out=nearest)
            current = nearest.argmax(-1)
    finally:
        torch.set_num_threads(threads)
    return idx


def ball_query(radius: float, nsample: int, xyz: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Indices [B, S, nsample] of points within `radius` of each centre.

    Same rule as the reference: the `nsample` lowest point indices inside the
    ball (not the nearest ones), padded with the first of them. The centre is a
    point of the cloud, so every ball holds at least one point.
    """
    n = xyz.shape[1]
    d2 = torch.cdist(centres, xyz) ** 2
    index = torch.arange(n, device=xyz.device).expand_as(d2)
    index = torch.where(d2 > radius**2, n, index)
    index = index.topk(min(nsample, n), dim=-1, largest=False, sorted=True).values
    return torch.where(index == n, index[..., :1], index)


def _gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """points [B, N, C], idx [B, ...] -> [B, ..., C]."""
    b = points.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


class PointNetSetAbstraction(nn.Module):
    """Sample centres (FPS), group neighbours (ball query), shared MLP, max-pool."""

    def __init__(self, npoint: int | None, radius: float | None, nsample: int | None,
                 in_channel: int, mlp: list[int], group_all: bool):
        super().__init__()
        self.npoint, self.radius, self.nsample, self.group_all = npoint, radius, nsample, group_all
        self.mlp_convs = nn.ModuleList()
        self.mlp_bns = nn.ModuleList()
        for out_channel in mlp:
            self.mlp_convs.append(nn.Conv2d(in_channel, out_channel, 1))
            self.mlp_bns.append(nn.BatchNorm2d(out_channel))
            in_channel = out_channel

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None, generator=None):
        """xyz [B, N, 3], feats [B, N, D] or None -> (centres [B, S, 3], features [B, S, C])."""
        if self.group_all:
            centres = xyz.new_zeros(xyz.shape[0], 1, 3)
            grouped = xyz[:, None]  # raw coordinates, as the reference does
            grouped_feats = None if feats is None else feats[:, None]
        else:
            centres = _gather(xyz, farthest_point_sample(xyz, self.npoint, generator))
            idx = ball_query(self.radius, self.nsample, xyz, centres)
            grouped = _gather(xyz, idx) - centres[:, :, None, :]  # local coordinates
            grouped_feats = None if feats is None else _gather(feats, idx)
        if grouped_feats is not None:
            grouped = torch.cat([grouped, grouped_feats], dim=-1)  # coordinates first, then features
        h = grouped.permute(0, 3, 1, 2)  # [B, C, S, K]
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            h = F.relu(bn(conv(h)))
        return centres, h.amax(dim=3).transpose(1, 2)


@dataclass(frozen=True)
class PointNet2Arch:
    """Layout of `PointNet2SSG`; the defaults are yanx27's pointnet2_cls_ssg (ModelNet40).

    `width` scales the set-abstraction MLPs (the per-point convolutions, where
    nearly all of the compute goes); the classifier head keeps 512 -> 256 so the
    FPD embedding stays 256-d. Centre counts and ball sizes are the reference's.
    A smaller width is still PointNet++ SSG, only narrower: it makes CPU training
    affordable, and its weights record the layout in their metadata.
    """

    width: float = 1.0

    def channels(self, c: int) -> int:
        return max(1, round(c * self.width))


class PointNet2SSG(nn.Module):
    """PointNet++ single-scale-grouping classifier without normals (ModelNet40 layout)."""

    def __init__(self, num_classes: int = 40, arch: PointNet2Arch = PointNet2Arch()):
        super().__init__()
        self.arch = arch
        c = arch.channels
        self.sa1 = PointNetSetAbstraction(512, 0.2, 32, 3, [c(64), c(64), c(128)], group_all=False)
        self.sa2 = PointNetSetAbstraction(128, 0.4, 64, c(128) + 3, [c(128), c(128), c(256)], group_all=False)
        self.sa3 = PointNetSetAbstraction(None, None, None, c(256) + 3, [c(256), c(512), c(1024)], group_all=True)
        self.fc1 = nn.Linear(c(1024), 512)
        self.bn1 = nn.BatchNorm1d(512)
        self.drop1 = nn.Dropout(0.4)
        self.fc2 = nn.Linear(512, 256)
        self.bn2 = nn.BatchNorm1d(256)
        self.drop2 = nn.Dropout(0.4)
        self.fc3 = nn.Linear(256, num_classes)

    def features(self, xyz: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The FPD embedding: 256-d activations after fc2 -> bn2 -> ReLU; xyz [B, N, 3]."""
        l1_xyz, l1 = self.sa1(xyz, None, generator)
        l2_xyz, l2 = self.sa2(l1_xyz, l1, generator)
        _, l3 = self.sa3(l2_xyz, l2, generator)
        h = self.drop1(F.relu(self.bn1(self.fc1(l3[:, 0]))))
        return F.relu(self.bn2(self.fc2(h)))

    def forward(self, xyz: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class logits (the reference returns log-softmax; the argmax is the same)."""
        return self.fc3(self.drop2(self.features(xyz, generator)))


def network_id(state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of all weights and buffers: FPD values agree only under one id."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class FeatureNet:
    model: PointNet2SSG
    id: str
    classes: list[str]
    input_norm: str  # normalisation applied to clouds before the network (metrics.NORM_MODES)
    source: str


def load_feature_net(path: str | Path) -> FeatureNet:
    """Load a network from `fpd-train` (.safetensors) or the public yanx27 checkpoint (.pth).

    The public checkpoint is a torch pickle: it is read with weights_only=True,
    which refuses anything but tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        state, meta = load_safetensors(path)
        if meta.get("format") != NET_FORMAT:
            raise InputError(f"{path}: not an FPD network (metadata format {meta.get('format')!r})")
        classes, input_norm = list(meta["classes"]), meta.get("input_norm", "hd")
        try:
            arch = PointNet2Arch(**meta.get("arch", {}))
        except TypeError as e:
            raise InputError(f"{path}: unknown network layout in metadata 'arch' ({e})") from None
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            # torch's message spans many lines and suggests weights_only=False; keep the line that names the cause
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            cause = next((ln for ln in lines if ln.startswith("Unsupported")), lines[0] if lines else "")
            raise InputError(f"{path}: not a loadable torch checkpoint, refused without running it "
                             f"({type(e).__name__}: {cause[:200]})") from None
        state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise InputError(f"{path}: expected a dict with 'model_state_dict'")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        n_cls = state["fc3.weight"].shape[0] if "fc3.weight" in state else 40
        classes, input_norm = [f"class{i}" for i in range(n_cls)], "hd"  # official protocol inputs
        arch = PointNet2Arch()  # the public checkpoint is the reference layout
    if "fc3.weight" not in state:
        raise InputError(f"{path}: no 'fc3.weight' tensor: not a PointNet++ SSG classifier state dict")
    model = PointNet2SSG(num_classes=state["fc3.weight"].shape[0], arch=arch)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise InputError(f"{path}: state dict does not match PointNet++ SSG without normals: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    try:
        model.load_state_dict(state)  # copies (and widens float16 storage) into the float32 parameters
    except RuntimeError as e:
        raise InputError(f"{path}: tensor shapes do not match PointNet++ SSG: {e}") from None
    model.eval()
    source = DEFAULT_NET_NAME + " (shipped default)" if path.resolve() == DEFAULT_NET.resolve() else str(path)
    return FeatureNet(model, network_id(model.state_dict()), classes, input_norm, source)


# ---------------------------------------------------------------------------
# Features and the Fréchet distance
# ---------------------------------------------------------------------------

@torch.no_grad()
def extract_features(model: PointNet2SSG, clouds: np.ndarray, batch_size: int = 32, seed: int = 0,
                     device: str = "cpu") -> np.ndarray:
    """Eval-mode 256-d features [K, 256] of clouds [K, N, 3] (already normalised)."""
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, len(clouds), batch_size):
        x = torch.as_tensor(np.asarray(clouds[s:s + batch_size]), dtype=torch.float32, device=device)
        out.append(model.features(x, gen).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 256))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982).

    Handles a singular product and tiny imaginary parts of the matrix square root
    as the standard FID code does (pytorch-fid): offset the diagonals by `eps`
    when the root is not finite; drop imaginary parts only when they are negligible.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        # scipy's sqrtm does not return on NaN input (a covariance of one sample is NaN)
        raise ValueError("Fréchet distance of non-finite statistics (a set of fewer than 2 samples?)")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fpd(samples: np.ndarray, reference: np.ndarray, net: FeatureNet, seed: int = 0,
        device: str = "cpu") -> dict:
    """FPD between two sets of clouds [K, N, 3] (raw; normalised here as the net expects)."""
    from hyperdiffusion.evaluation.metrics import normalize_clouds

    if min(len(samples), len(reference)) < MIN_CLOUDS:
        raise InputError(f"FPD needs at least {MIN_CLOUDS} clouds per set for a covariance, got "
                         f"{len(samples)} samples and {len(reference)} references")
    fs = extract_features(net.model, normalize_clouds(samples, net.input_norm), seed=seed, device=device)
    fr = extract_features(net.model, normalize_clouds(reference, net.input_norm), seed=seed, device=device)
    value = frechet_distance(*gaussian_stats(fs), *gaussian_stats(fr))
    return {"value": value, "network_id": net.id, "input_norm": net.input_norm, "source": net.source}


# ---------------------------------------------------------------------------
# Training the feature network (`hyperdiffusion fpd-train`)
# ---------------------------------------------------------------------------

@dataclass
class FPDTrainConfig:
    """Defaults follow yanx27's train_classification.py (Adam 1e-3, weight decay
    1e-4, batch 24, StepLR 0.7 every 20 epochs, scale/shift augmentation), with
    fewer epochs: our datasets are a few hundred shapes, not ModelNet's 9843."""

    epochs: int = 60
    batch_size: int = 24
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "step"  # "step": x0.7 every 20 epochs (reference); "cosine": to 0 over `epochs` (short runs)
    n_points: int = 1024  # ModelNet training uses 1024 points; FPD inputs may have more
    width: float = 1.0  # PointNet2Arch.width: 1.0 is the reference layout (the public checkpoint's)
    storage: str = "float32"  # "float16" halves the file; the network id is taken after rounding
    input_norm: str = "hd"  # the normalisation evaluate applies before FPD
    seed: int = 0


CPU_PRESET = FPDTrainConfig(epochs=8, batch_size=16, n_points=512)
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def parse_class_spec(spec: str | Path) -> tuple[str, list[Path]]:
    """`DIR` -> (name of DIR, [DIR]); `NAME=DIR[,DIR...]` -> (NAME, [DIR, ...]): one class from several datasets.

    Grouping lets one semantic class (e.g. chair) hold shapes from several sources
    (built-in and real chairs), so the network learns what a chair is rather than
    which source a chair came from.
    """
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, folders = text.partition("=")
        dirs = [Path(f) for f in folders.split(",") if f]
        if not name or not dirs:
            raise InputError(f"{text!r}: expected NAME=DIR[,DIR...]")
        return name, dirs
    return Path(text).resolve().name, [Path(text)]


def load_class_clouds(folder: str | Path, splits: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Reference clouds of the given splits of a prepared dataset (docs/FORMATS.md)."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json")
    names = [n for s in splits for n in manifest.get("splits", {}).get(s, [])]
    names = [n for n in names if (folder / "shapes" / n / "cloud.npy").is_file()]
    clouds = [load_npy(folder / "shapes" / n / "cloud.npy").astype(np.float32) for n in names]
    return (np.stack(clouds) if clouds else np.zeros((0, 2048, 3), np.float32)), names


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """yanx27 provider.py: random scale in [0.8, 1.25] and shift in [-0.1, 0.1] per cloud."""
    b = x.shape[0]
    scale = torch.empty(b, 1, 1).uniform_(0.8, 1.25, generator=gen)
    shift = torch.empty(b, 1, 3).uniform_(-0.1, 0.1, generator=gen)
    return x * scale + shift


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.stack([rng.choice(x.shape[1], n, replace=x.shape[1] < n) for _ in range(len(x))])
    return np.take_along_axis(x, idx[:, :, None], axis=1)


@torch.no_grad()
def _predict(model: PointNet2SSG, x: np.ndarray, cfg: FPDTrainConfig) -> np.ndarray:
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    pred = [model(torch.as_tensor(x[s:s + cfg.batch_size]), gen).argmax(1).numpy()
            for s in range(0, len(x), cfg.batch_size)]
    return np.concatenate(pred) if pred else np.zeros(0, np.int64)


def _scores(pred: np.ndarray, y: np.ndarray, n_classes: int) -> dict | None:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    if len(y) == 0:
        return None
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    per_class = [float(confusion[c, c] / confusion[c].sum()) if confusion[c].sum() else None for c in range(n_classes)]
    return {"accuracy": float((pred == y).mean()), "per_class": per_class, "confusion": confusion.tolist()}


def _round_state(state: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Floating tensors cast to the storage dtype (integer buffers kept as they are)."""
    if storage not in STORAGE_DTYPES:
        raise InputError(f"storage must be one of {', '.join(STORAGE_DTYPES)}, not {storage!r}")
    dtype = STORAGE_DTYPES[storage]
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def train_feature_net(datasets: list[str | Path], out: str | Path, cfg: FPDTrainConfig = FPDTrainConfig()) -> dict:
    """Train PointNet++ SSG to tell the classes apart; write OUT/fpd_net.{safetensors,json}.

    Each entry of `datasets` is one class: a prepared dataset folder, or
    `NAME=DIR[,DIR...]` for a class made of several (`parse_class_spec`). Train on
    each dataset's train+val splits; report accuracy on the test splits (shapes never
    trained on), both at the training point count and on the full clouds that FPD
    embeds. Resumes from OUT/fpd_train_state.safetensors (weights + epoch; Adam moments restart).
    """
    import time

    from hyperdiffusion.evaluation.metrics import normalize_clouds
    from hyperdiffusion.progress import progress

    if len(datasets) < 2:
        raise InputError("fpd-train needs at least two classes (dataset folders or NAME=DIR[,DIR...])")
    if cfg.schedule not in ("step", "cosine"):
        raise InputError(f"schedule must be 'step' or 'cosine', not {cfg.schedule!r}")
    out = Path(out)
    specs = [parse_class_spec(d) for d in datasets]
    classes = [name for name, _ in specs]
    if len(set(classes)) != len(classes):
        raise InputError(f"class names must be distinct, got {classes} (name them with NAME=DIR)")
    xs, ys, xt, yt, sources = [], [], [], [], []
    for c, (name, folders) in enumerate(specs):
        for folder in folders:
            train, _ = load_class_clouds(folder, ("train", "val"))
            test, _ = load_class_clouds(folder, ("test",))
            if len(train) == 0:
                raise InputError(f"{folder}: no train/val clouds (shapes/<name>/cloud.npy) in the manifest")
            xs.append(train), ys.append(np.full(len(train), c)), xt.append(test), yt.append(np.full(len(test), c))
            sources.append({"class": name, "dataset": str(Path(folder).resolve()), "n_train": len(train),
                            "n_test": len(test)})
    x_train = normalize_clouds(np.concatenate(xs), cfg.input_norm).astype(np.float32)
    y_train = np.concatenate(ys)
    x_test = normalize_clouds(np.concatenate(xt), cfg.input_norm).astype(np.float32) if sum(map(len, xt)) else np.zeros((0, 2048, 3), np.float32)
    y_test = np.concatenate(yt)

    torch.manual_seed(cfg.seed)
    arch = PointNet2Arch(width=cfg.width)
    model = PointNet2SSG(num_classes=len(classes), arch=arch)
    state_path = out / "fpd_train_state.safetensors"
    start, seconds = 0, 0.0
    if state_path.is_file():
        tensors, meta = load_safetensors(state_path)
        if meta.get("classes") == classes and meta.get("config") == asdict(cfg):
            model.load_state_dict(tensors)
            start, seconds = int(meta["epoch"]), float(meta.get("seconds", 0.0))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.7) if cfg.schedule == "step"
             else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs))
    for _ in range(start):
        sched.step()
    # Class-balanced sampling: one epoch draws len(x_train) clouds with equal class weight.
    weights = 1.0 / np.bincount(y_train)[y_train]
    weights /= weights.sum()
    log_path = out / "fpd_train_log.jsonl"
    for epoch in progress(range(start, cfg.epochs), desc="fpd-train", initial=start, total=cfg.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng(cfg.seed + epoch)
        gen = torch.Generator().manual_seed(cfg.seed + epoch)
        order = rng.choice(len(x_train), len(x_train), p=weights)
        model.train()
        losses, correct = [], 0
        for s in range(0, len(order) - 1, cfg.batch_size):  # BatchNorm needs >= 2 per batch
            batch = order[s:s + cfg.batch_size]
            if len(batch) < 2:
                continue
            x = _augment(torch.as_tensor(_subsample(x_train[batch], cfg.n_points, rng)), gen)
            logits = model(x, gen)
            loss = F.cross_entropy(logits, torch.as_tensor(y_train[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1).numpy() == y_train[batch]).sum())
        sched.step()
        seconds += time.perf_counter() - t0
        save_safetensors(state_path, model.state_dict(),
                         {"classes": classes, "config": asdict(cfg), "epoch": epoch + 1, "seconds": seconds})
        # Training figures only: the test split is scored once, after the last epoch.
        with open(log_path, "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                                "train_batch_accuracy": correct / max(len(order), 1),
                                "lr": opt.param_groups[0]["lr"], "seconds": round(seconds, 1)}) + "\n")

    model.load_state_dict(_round_state(model.state_dict(), cfg.storage))  # score what is shipped
    state = model.state_dict()
    net_id = network_id(state)
    rng = np.random.default_rng(cfg.seed)
    n_cls = len(classes)
    test_sub = _scores(_predict(model, _subsample(x_test, cfg.n_points, rng), cfg), y_test, n_cls) if len(x_test) else None
    test_full = _scores(_predict(model, x_test, cfg), y_test, n_cls) if len(x_test) else None
    train_sub = _scores(_predict(model, _subsample(x_train, cfg.n_points, rng), cfg), y_train, n_cls)
    info = {
        "format": NET_FORMAT,
        "network_id": net_id,
        "classes": classes,
        "datasets": sources,
        "n_train": np.bincount(y_train, minlength=n_cls).tolist(),
        "n_test": np.bincount(y_test, minlength=n_cls).tolist(),
        "train_accuracy": train_sub["accuracy"],
        "test_accuracy": test_sub["accuracy"] if test_sub else None,
        "test_accuracy_full_clouds": test_full["accuracy"] if test_full else None,
        "test_points": int(x_test.shape[1]) if len(x_test) else None,
        "test": test_sub,
        "test_full_clouds": test_full,
        "arch": asdict(arch),
        "input_norm": cfg.input_norm,
        "config": asdict(cfg),
        "train_seconds": round(seconds, 1),
        "note": "FPD values are comparable only when computed with the same network_id.",
    }
    save_safetensors(out / "fpd_net.safetensors", _round_state(state, cfg.storage),
                     {k: info[k] for k in ("format", "network_id", "classes", "arch", "input_norm", "config")})
    write_json(out / "fpd_net.json", info)
    return info


def _cmd_train(args: argparse.Namespace) -> int:
    base = CPU_PRESET if args.cpu else FPDTrainConfig()
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "schedule", "n_points", "width",
                                                "storage", "seed") if getattr(args, k) is not None}
    cfg = FPDTrainConfig(**{**asdict(base), **overrides})
    info = train_feature_net(args.datasets, args.out, cfg)
    print(json.dumps({k: info[k] for k in ("network_id", "classes", "n_train", "n_test", "train_accuracy",
                                           "test_accuracy", "test_accuracy_full_clouds", "train_seconds")}))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fpd-train", help="train the PointNet++ feature network used by FPD",
        description="Train PointNet++ SSG (no normals) to classify prepared datasets, one class per DATASET "
                    "argument; writes OUT/fpd_net.safetensors and OUT/fpd_net.json (classes, accuracy, "
                    "network_id). FPD values are comparable only under the same network_id. "
                    "The shipped default network: docs/EVALUATION.md.")
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="a prepared dataset folder (one class, named after the folder) or NAME=DIR[,DIR...] "
                        "(one class NAME made of several datasets)")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--cpu", action="store_true", help=f"small CPU preset ({CPU_PRESET.epochs} epochs, "
                   f"{CPU_PRESET.n_points} points)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=("step", "cosine"),
                   help="learning rate: step (x0.7 every 20 epochs, reference; default) or cosine")
    p.add_argument("--n-points", type=int)
    p.add_argument("--width", type=float, help="multiplier of the set-abstraction widths (default 1.0, "
                   "the reference layout; 0.25 trains ~4x faster on a CPU)")
    p.add_argument("--storage", choices=tuple(STORAGE_DTYPES), help="dtype of the written weights "
                   "(default float32; float16 halves the file)")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_cmd_train)
