"""The `hyperdiffusion` command: one subcommand per pipeline stage.

Each stage module exposes `register(subparsers)`, which adds its subcommand and
sets `func` to a callable taking the parsed arguments and returning an exit
code. Stage modules are imported only when the CLI starts, so a broken optional
stage cannot hide the others' help.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hyperdiffusion import __version__
from hyperdiffusion.io import InputError

# In pipeline order (the help lists them so): subcommand module, by dotted path in the package.
STAGES = ["data.prepare", "fields.fit", "fields.mesh", "diffusion.train", "diffusion.sample",
          "diffusion.interpolate", "diffusion.complete",
          "evaluation.evaluate", "evaluation.fpd", "evaluation.compare", "pictures.render", "demo", "shards"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperdiffusion",
        description="HyperDiffusion: weight-space diffusion over occupancy MLPs (Erkoç et al., ICCV 2023).",
    )
    parser.add_argument("--version", action="version", version=f"hyperdiffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")
    for name in STAGES:
        try:
            module = importlib.import_module(f"hyperdiffusion.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hyperdiffusion.{name}":
                continue  # stage not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"hyperdiffusion {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hyperdiffusion {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
