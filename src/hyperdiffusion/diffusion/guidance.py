"""Class-conditional weight diffusion with classifier-free guidance (not in the paper).

One model learns several categories at once: `train DATA_A DATA_B ... --condition class` reads each
dataset (a weight set from `fit`, or a prepared dataset for the voxel baseline) as one class. The
denoiser gets the class as one more input: a class token in the weight transformer
(denoisers/transformer.py), guided-diffusion's `label_emb` added to the timestep embedding in the
3D UNet (denoisers/unet3d.py). Both keep one extra "null" class, index `num_classes`.

Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598, Sec. 3.2): while training, each
sample's class is replaced by the null class with probability `cond_drop_prob` (0.1 here: their
experiments use p_uncond 0.1 or 0.2), so one network learns both the conditional and the
unconditional model. At sampling, with guidance weight w,

    prediction = uncond + w * (cond - uncond)

applied to the network's output, whatever it predicts (x0 for HyperDiffusion, eps or v for others;
each is affine in the other given x_t, with coefficients that do not depend on the class, so
guiding one guides them all alike). Our w is Ho & Salimans' 1 + w: w = 0 is the unconditional
model (exactly: the conditional branch is not evaluated), w = 1 the plain conditional model, w > 1
pushes samples further towards the class. Same convention as Stable Diffusion's
`guidance_scale`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from hyperdiffusion.diffusion.runtime import seeded_generator
from hyperdiffusion.io import InputError

CONDITIONS = ("class",)  # what TrainConfig.condition may name (None = unconditional, the paper)
DEFAULT_DROP_PROB = 0.1  # Ho & Salimans 2022: p_uncond in {0.1, 0.2}
SOURCE_KEYS = ("dataset",)  # TrainingSet.info entries that name the source, not the kind of sample


def _manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def class_name(source: str | Path) -> str:
    """The class a training source stands for.

    A prepared dataset's manifest names it ("category", or the family of a "builtin:<family>"
    source); a weight set from `fit` points at its prepared dataset; otherwise the folder's name
    (the weight set's folder, without a "weights.safetensors" file name)."""
    path = Path(source)
    folder = path.parent if path.suffix == ".safetensors" else path
    candidates = [folder]
    weights = path if path.suffix == ".safetensors" else folder / "weights.safetensors"
    if weights.is_file():
        from hyperdiffusion.io import load_safetensors

        _, meta = load_safetensors(weights, prefixes=())
        dataset = (meta.get("extra") or {}).get("dataset")
        if dataset:
            candidates.insert(0, Path(dataset))
    for c in candidates:
        m = _manifest(c)
        if m is None:
            continue
        if m.get("category"):
            return str(m["category"])
        src = str(m.get("source", ""))
        if src.startswith("builtin:"):
            return src.split(":", 1)[1]
        return c.name
    return folder.name


@dataclass
class ClassCondition:
    """Which class each training sample belongs to, and how the classes are dropped while training."""

    classes: list[str]
    labels: torch.Tensor  # [N] long, index into `classes`
    sources: list[str]
    drop_prob: float = DEFAULT_DROP_PROB

    @property
    def null_index(self) -> int:
        return len(self.classes)

    def batch_labels(self, idx: torch.Tensor, step: int, seed: int) -> torch.Tensor:
        """The labels of the samples `idx`, each replaced by the null class with probability drop_prob.

        The coin flips come from a generator seeded by (seed, step) alone, so resuming a run takes the
        same steps as one that never stopped (as the timesteps and noise in train.py)."""
        y = self.labels[idx.cpu()].clone()
        drop = torch.rand(len(y), generator=seeded_generator(seed, 6, step)) < self.drop_prob
        y[drop] = self.null_index
        return y

    def to_meta(self) -> dict[str, Any]:
        """What a checkpoint records: `sample --class NAME` finds the index here."""
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return {"kind": "class", "classes": self.classes, "counts": counts, "sources": self.sources,
                "drop_prob": self.drop_prob, "null_index": self.null_index,
                "guidance": "prediction = uncond + w * (cond - uncond); w 0 = unconditional, 1 = conditional"}


def load_training_data(rep, data, condition: str | None, drop_prob: float, *, progress: bool = True):
    """(TrainingSet, ClassCondition | None): one source as before, or several sources, one class each."""
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    if condition is None:
        if len(sources) != 1:
            raise InputError(f"{len(sources)} datasets given; training on several at once needs --condition class "
                             "(each dataset one class)")
        return rep.load(sources[0], progress=progress), None
    if condition not in CONDITIONS:
        raise InputError(f"unknown --condition {condition!r}; choose one of {', '.join(CONDITIONS)}")
    if not 0.0 <= drop_prob < 1.0:
        raise InputError(f"--cond-drop-prob is a probability in [0, 1); got {drop_prob}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--condition class does not run under torchrun yet; train it in one process")
    sets = [rep.load(s, progress=progress) for s in sources]
    names = [class_name(s) for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"datasets {', '.join(map(str, sources))} give the class names {names}; each dataset must "
                         "be one class (a manifest category, a builtin family, or a distinct folder name)")
    first = sets[0]

    def kind(info: dict[str, Any]) -> dict[str, Any]:  # what a sample is, without where it came from
        return {k: v for k, v in info.items() if k not in SOURCE_KEYS}

    for s, src in zip(sets[1:], sources[1:]):
        if kind(s.info) != kind(first.info) or s.sample_shape != first.sample_shape or s.layout != first.layout:
            raise InputError(f"{src}: its samples differ from {sources[0]}'s ({s.sample_shape} vs "
                             f"{first.sample_shape}, or another MLP / grid); one model needs one kind of sample")
    from hyperdiffusion.representations import TrainingSet

    info = {**first.info, **({k: [s.info.get(k) for s in sets] for k in SOURCE_KEYS if k in first.info})}
    tset = TrainingSet(torch.cat([s.data for s in sets]), [f"{c}/{n}" for c, s in zip(names, sets) for n in s.names],
                       info, first.layout, ",".join(map(str, sources)))
    labels = torch.cat([torch.full((len(s.data),), i, dtype=torch.long) for i, s in enumerate(sets)])
    return tset, ClassCondition(names, labels, [str(s) for s in sources], drop_prob)


def check_resume(cond: ClassCondition | None, ckpt_meta: dict[str, Any], ckpt: Path) -> None:
    """A resumed run must see the same classes, in the same order."""
    saved = (ckpt_meta.get("condition") or {}).get("classes")
    now = cond.classes if cond is not None else None
    if ckpt_meta and saved != now:
        raise InputError(f"{ckpt}: trained with classes {saved}; now {now}; use the original datasets in the "
                         "original order, or a new OUT folder")


def with_labels(model: Callable, y: torch.Tensor | None) -> Callable:
    """`model(x, t)` with the class labels `y` bound (None: no labels passed, the unconditional call)."""
    if y is None:
        return model

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t, y.to(x.device).expand(x.shape[0]) if y.dim() == 0 else y.to(x.device))

    return call


def class_index(meta: dict[str, Any], name: str) -> int:
    """The label of class `name` in a checkpoint's metadata."""
    classes = (meta.get("condition") or {}).get("classes")
    if not classes:
        raise InputError("--class needs a class-conditional checkpoint (train with --condition class); "
                         "this one is unconditional")
    if name not in classes:
        raise InputError(f"unknown class {name!r}; this checkpoint knows {', '.join(classes)}")
    return classes.index(name)


def guided(model: Callable, y: int | torch.Tensor, w: float, null_index: int) -> Callable:
    """Classifier-free guidance: `model(x, t) -> uncond + w (cond - uncond)` for class(es) `y`.

    w = 0 evaluates only the unconditional branch and w = 1 only the conditional one, so both give
    exactly the model's own output (no arithmetic on the prediction)."""
    y = torch.as_tensor(y, dtype=torch.long)
    cond, uncond = with_labels(model, y), with_labels(model, torch.as_tensor(null_index, dtype=torch.long))
    w = float(w)
    if w == 0.0:
        return uncond
    if w == 1.0:
        return cond

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        u = uncond(x, t)
        return u + w * (cond(x, t) - u)

    return call


def sampling_model(model: Callable, meta: dict[str, Any], class_name: str | None, guidance: float) -> Callable:
    """What `sample` runs: the model as trained, or guided towards `class_name` (None: unconditional,
    which for a conditional model is its null class)."""
    if class_name is None:
        return model
    return guided(model, class_index(meta, class_name), guidance, int(meta["condition"]["null_index"]))
