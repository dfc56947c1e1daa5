"""Files shared by every stage: atomic writes, JSON, safetensors, safe names.

Every write goes to a temporary file in the destination folder and is then
renamed over the target, so a crash never leaves a half-written file where a
reader would take it for a finished one (rename is atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(Exception):
    """Bad input that the user must fix; the CLI prints it as one line."""


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    `suffix` keeps the file extension for writers that infer the format from it
    (trimesh, numpy). On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; finished files get the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Uncompressed npz written atomically; read back with `load_npz` (no pickle)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise InputError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from None


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as e:
        raise InputError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, Any] | None = None) -> None:
    """Torch tensors to safetensors; metadata values that are not strings are stored as JSON."""
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v, default=_json_default) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path: str | os.PathLike, device: str = "cpu", prefixes: tuple[str, ...] | None = None
                     ) -> tuple[dict, dict[str, Any]]:
    """Return (tensors, metadata) with JSON metadata values decoded.

    `prefixes` reads only the tensors whose names start with one of them; `()` reads the metadata alone.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys() if prefixes is None or k.startswith(prefixes)}
    except Exception as e:
        raise InputError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-system-safe name that cannot escape its folder (`../../x` -> `x`)."""
    parts = [p for p in re.split(r"[\\/]+", str(name)) if p not in ("", ".", "..")]
    cleaned = _UNSAFE.sub("_", "_".join(parts)).strip("._")
    return cleaned or "shape"


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) and check that we can write into it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{path}: output folder is not writable ({e.strerror or e})") from None
    return path
