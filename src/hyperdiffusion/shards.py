"""Split a stage's work across processes or machines, and merge the parts into the unsharded result.

`fit`, `mesh`, `sample` and `evaluate` take `--shard K/N` (K = 0 .. N-1); under torchrun
they read RANK / WORLD_SIZE instead, so `torchrun --nproc_per_node N -m hyperdiffusion fit ...`
splits the work over N processes (DiT's `sample_ddp.py` splits its samples the same way).
Each stage cuts its work into the units its resume already uses (fit: chunks of shapes,
sample: batches, mesh: shapes, evaluate: rows of the distance matrices) and shard K takes
units K, K + N, K + 2N, ...; a unit is computed exactly as in the unsharded run (same
seeds, same order inside it), so the merge reproduces the unsharded files.

Layout (docs/FORMATS.md "Shards"): every shard writes its status under

    OUT/shards/<group>/<K>-of-<N>/        done.json (+ the stage's own per-shard files)

and never writes a file that another shard writes. The shard that finishes last (the one
that finds every done.json present and wins an exclusive claim file) merges, so a run
ends with the same OUT as an unsharded run; `hyperdiffusion merge OUT` does it by hand
(after copying the shards' folders together from several machines, or after a merge
that was killed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from hyperdiffusion.io import InputError, read_json, write_json

T = TypeVar("T")

# stage -> "module:function" taking (out folder, the done.json records of all shards) and merging.
MERGERS = {
    "fit": "hyperdiffusion.fields.fit:merge_shards",
    "mesh": "hyperdiffusion.fields.mesh:merge_shards",
    "sample": "hyperdiffusion.diffusion.sample:merge_shards",
    "evaluate": "hyperdiffusion.evaluation.evaluate:merge_shards",
}


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: owns work units index, index + count, index + 2 count, ..."""

    index: int
    count: int

    def __post_init__(self):
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise InputError(f"--shard {self.index}/{self.count}: need 0 <= K < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def dirname(self) -> str:
        return f"{self.index}-of-{self.count}"

    def owns(self, unit: int) -> bool:
        return unit % self.count == self.index

    def take(self, units: Sequence[T]) -> list[T]:
        """This shard's units, round robin (balanced when later units are cheaper, as rows of a triangle)."""
        return list(units[self.index::self.count])


def parse_shard(spec: str | None) -> Shard | None:
    """"K/N" -> Shard(K, N); None -> None."""
    if spec is None:
        return None
    try:
        k, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise InputError(f"--shard {spec}: expected K/N, e.g. 0/4") from None
    return Shard(k, n)


def resolve_shard(spec: str | Shard | None = None, env: dict[str, str] | None = None) -> Shard | None:
    """The shard of this process: `--shard K/N` if given, else RANK/WORLD_SIZE under torchrun, else None."""
    env = os.environ if env is None else env
    shard = spec if isinstance(spec, Shard) else parse_shard(spec)
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if shard is None and world > 1:
        return Shard(int(env.get("RANK", "0")), world)
    if shard is not None and world > 1 and shard != Shard(int(env.get("RANK", "0")), world):
        raise InputError(f"--shard {shard} under torchrun rank {env.get('RANK')} of {world}: give one or the other")
    return shard if shard is None or shard.count > 1 else None  # 0/1 is the unsharded run


def shard_dir(out: str | Path, group: str, shard: Shard) -> Path:
    return Path(out) / "shards" / group / shard.dirname


def wait_for(path: Path, what: str, timeout_s: float, poll_s: float = 2.0) -> None:
    """Wait until `path` exists (written atomically by another shard); InputError after `timeout_s`."""
    t0 = time.monotonic()
    announced = False
    while not path.exists():
        if time.monotonic() - t0 > timeout_s:
            raise InputError(f"{path}: still missing after {timeout_s:.0f} s ({what})")
        if not announced:
            print(f"waiting for {path} ({what})", flush=True)
            announced = True
        time.sleep(poll_s)


def finish(out: str | Path, group: str, shard: Shard, stage: str, args: dict[str, Any], merge: bool = True) -> bool:
    """Record this shard as done; if every shard of the group is done, merge (once). True if this call merged.

    Two shards finishing together may both see every done.json; the exclusive creation of a
    claim file lets only one of them merge. The claim is removed when the merge ends (or fails),
    so `hyperdiffusion merge OUT` or a rerun can merge again; results are the same each time.
    """
    root = Path(out) / "shards" / group
    write_json(shard_dir(out, group, shard) / "done.json",
               {"stage": stage, "group": group, "shard": str(shard), "count": shard.count, "args": args})
    if not merge or missing_shards(root, shard.count):
        return False
    claim = root / f"merge-{shard.count}.claim"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False  # another shard is merging
    os.close(fd)
    try:
        merge_group(out, group, shard.count)
    finally:
        claim.unlink(missing_ok=True)
    return True


def missing_shards(root: Path, count: int) -> list[str]:
    return [f"{k}/{count}" for k in range(count) if not (root / Shard(k, count).dirname / "done.json").is_file()]


def done_records(out: str | Path, group: str, count: int) -> list[dict[str, Any]]:
    """The done.json of every shard of `group`, in shard order; InputError naming the missing ones."""
    root = Path(out) / "shards" / group
    missing = missing_shards(root, count)
    if missing:
        raise InputError(f"{root}: shard(s) {', '.join(missing)} not finished; run them (or copy their "
                         "folders here) before merging")
    records = [read_json(root / Shard(k, count).dirname / "done.json") for k in range(count)]
    for r in records[1:]:
        if r.get("stage") != records[0].get("stage") or r.get("args") != records[0].get("args"):
            raise InputError(f"{root}: shards ran with different settings ({records[0].get('args')} vs "
                             f"{r.get('args')}); rerun them with one command line")
    return records


def merge_group(out: str | Path, group: str, count: int) -> None:
    records = done_records(out, group, count)
    module, func = MERGERS[records[0]["stage"]].split(":")
    getattr(importlib.import_module(module), func)(Path(out), records[0]["args"], count)


def groups(out: str | Path, only: str | None = None) -> dict[str, int]:
    """group -> shard count of every complete group under OUT/shards (or of `only`); InputError for an
    incomplete one."""
    root = Path(out) / "shards"
    found: dict[str, int] = {}
    for g in sorted(p for p in root.iterdir() if p.is_dir() and only in (None, p.name)) if root.is_dir() else []:
        counts = sorted({int(d.name.split("-of-")[1]) for d in g.iterdir() if "-of-" in d.name})
        complete = [n for n in counts if not missing_shards(g, n)]
        if len(complete) > 1:
            raise InputError(f"{g}: complete shard sets for N = {complete}; remove the stale one(s)")
        if not complete:
            n = counts[-1] if counts else 0
            raise InputError(f"{g}: shard(s) {', '.join(missing_shards(g, n)) if n else 'all'} not finished")
        found[g.name] = complete[0]
    return found


def merge_all(out: str | Path, only: str | None = None) -> list[str]:
    """Merge every sharded stage found under OUT/shards (or only the group `only`); returns the merged groups."""
    found = groups(out, only)
    if not found:
        raise InputError(f"{out}: no shards to merge (expected OUT/shards/<stage>/K-of-N/done.json)")
    for group, count in found.items():
        merge_group(out, group, count)
    return list(found)


def add_shard_argument(parser: argparse.ArgumentParser, unit: str) -> None:
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help=f"do shard K of N (K = 0..N-1) of the {unit}; the last shard to finish merges "
                             "(or `hyperdiffusion merge OUT`). Under torchrun RANK/WORLD_SIZE set it")


def register(subparsers) -> None:
    p = subparsers.add_parser("merge", help="merge the shards of fit/mesh/sample/evaluate into the unsharded outputs",
                              description="Merge every finished sharded stage under OUT/shards/ (docs/FORMATS.md "
                                          "'Shards'). Shards merge on their own when the last one finishes; use this "
                                          "after copying shard folders from several machines together.")
    p.add_argument("out", help="the stage's output folder (for evaluate: the folder of metrics.json)")
    p.add_argument("--only", default=None, metavar="GROUP",
                   help="merge only this folder of OUT/shards/ (fit, mesh, sample, evaluate-<metrics name>)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    for group in merge_all(args.out, args.only):
        print(f"merged {group} -> {args.out}")
    return 0
