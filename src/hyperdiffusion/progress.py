"""One progress display for every stage: a tqdm bar on a terminal, plain lines in a log file.

A tqdm bar redraws itself with carriage returns many times a second. On a terminal that
is what we want; redirected to a file (a batch job's log, `nohup`, CI) it becomes
thousands of overwritten fragments on one very long line. So `progress(...)` returns
a tqdm bar when its output stream is a terminal and a `PlainProgress` otherwise,
which prints one ordinary line now and then:

    fit: 480/1280 shape-epochs (37.5%), 10.6 shape-epoch/s, elapsed 45s, ETA 1m 15s [active=16]

at most every `interval_s` seconds, or sooner (but not more than once per
`min_interval_s`) when another `percent_step` % of the work is done, and one last
line when it closes. Both objects have the same small interface: iteration,
`update(n)`, `set_postfix(**kv)`, `refresh()`, `close()`, `n`, `total` (which may be
changed while running) and use as a context manager.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable, Iterator, TextIO


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             initial: float = 0, disable: bool = False, leave: bool = True, file: TextIO | None = None,
             interval_s: float = 30.0, min_interval_s: float = 2.0, percent_step: float = 5.0,
             **tqdm_kwargs: Any):
    """A progress display: tqdm on a terminal, occasional plain lines otherwise (see the module doc).

    `file` is where it writes (default: sys.stderr, as tqdm). `interval_s`,
    `min_interval_s` and `percent_step` pace the plain lines; `tqdm_kwargs` go to tqdm
    only. With `disable=True` nothing is printed (the object still counts).
    """
    stream = file if file is not None else sys.stderr
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not disable and _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream,
                    **tqdm_kwargs)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                         leave=leave, file=stream, interval_s=interval_s, min_interval_s=min_interval_s,
                         percent_step=percent_step)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_seconds(s: float) -> str:
    """45s, 3m 05s, 2h 07m."""
    if not math.isfinite(s):
        return "?"
    s = int(round(max(s, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def _plural(unit: str) -> str:
    return unit if unit.endswith("s") or unit == "it" else unit + "s"


class PlainProgress:
    """Progress as occasional complete lines (for logs). Same interface as the tqdm subset we use."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, disable: bool = False, leave: bool = True,
                 file: TextIO | None = None, interval_s: float = 30.0, min_interval_s: float = 2.0,
                 percent_step: float = 5.0, clock=time.monotonic):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.disable, self.leave = disable, leave
        self.file = file if file is not None else sys.stderr
        self.interval_s, self.min_interval_s, self.percent_step = interval_s, min_interval_s, percent_step
        self.postfix: dict[str, Any] = {}
        self._clock = clock
        self.start = self._last_print = clock()
        self._last_percent_mark = self._percent_mark()
        self.closed = False
        self.lines_printed = 0

    # -- the tqdm interface
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("PlainProgress made without an iterable is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        self._maybe_print()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """tqdm redraws here; a log only gets a line when one is due."""
        self._maybe_print()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # A last line for a display that made progress, so a log always shows the end; an inner
        # display (leave=False) stays quiet unless it had already printed.
        if not self.disable and self.n > self.initial and (self.leave or self.lines_printed):
            self._print(final=True)

    # -- the lines
    def _percent_mark(self) -> int:
        if not self.total or self.percent_step <= 0:
            return 0
        return int(100.0 * self.n / self.total // self.percent_step)

    def _maybe_print(self) -> None:
        if self.disable or self.closed or (self.total and self.n >= self.total):
            return  # the end gets its line from close()
        now = self._clock()
        since = now - self._last_print
        mark = self._percent_mark()
        if since >= self.interval_s or (mark > self._last_percent_mark and since >= self.min_interval_s):
            self._print()

    def rate(self) -> float:
        """Work per second over this run (work found done at the start, `initial`, is not counted)."""
        elapsed = self._clock() - self.start
        return (self.n - self.initial) / elapsed if elapsed > 0 else float("nan")

    def line(self, final: bool = False) -> str:
        elapsed = self._clock() - self.start
        rate = self.rate()
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{_count(self.n)}/{_count(self.total)} {_plural(self.unit)} "
                         f"({100.0 * self.n / self.total:.1f}%)")
        else:
            parts.append(f"{_count(self.n)} {_plural(self.unit)}")
        if math.isfinite(rate) and rate > 0:
            parts.append(f", {rate:.3g} {self.unit}/s" if rate >= 1 else f", {1 / rate:.3g} s/{self.unit}")
        parts.append(f", elapsed {format_seconds(elapsed)}")
        if not final and self.total and math.isfinite(rate) and rate > 0:
            parts.append(f", ETA {format_seconds(max(self.total - self.n, 0) / rate)}")
        if final:
            parts.append(", done" if self.total is None or self.n >= self.total else ", stopped")
        if self.postfix:
            parts.append(" [" + ", ".join(f"{k}={v}" for k, v in self.postfix.items()) + "]")
        return "".join(parts)

    def _print(self, final: bool = False) -> None:
        print(self.line(final), file=self.file, flush=True)
        self._last_print = self._clock()
        self._last_percent_mark = self._percent_mark()
        self.lines_printed += 1
