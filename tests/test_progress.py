"""The progress helper: a tqdm bar on a terminal, a few plain lines with count, rate and ETA in a log."""

import io

from hyperdiffusion.progress import PlainProgress, format_seconds, progress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_tqdm_and_a_log_gets_plain_lines():
    from tqdm import tqdm

    assert isinstance(progress(total=3, file=Terminal()), tqdm)
    assert isinstance(progress(total=3, file=io.StringIO()), PlainProgress)
    assert isinstance(progress(total=3, file=Terminal(), disable=True), PlainProgress)  # silent either way


def test_plain_lines_known_rate_and_eta():
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress(total=100, desc="fit", unit="step", file=out, interval_s=30, min_interval_s=2,
                        percent_step=10, clock=clock)
    clock.t = 10.0
    bar.update(25)  # 25 steps in 10 s: 2.5 steps/s, 75 left -> 30 s
    assert out.getvalue() == "fit: 25/100 steps (25.0%), 2.5 step/s, elapsed 10s, ETA 30s\n"
    bar.total = 50  # the work shrank (shapes stopped early): 25 left -> 10 s
    bar.set_postfix(active=3)
    clock.t = 20.0
    bar.update(25)
    bar.close()
    assert out.getvalue().splitlines()[1:] == [  # the end is said once, by close()
        "fit: 50/50 steps (100.0%), 2.5 step/s, elapsed 20s, done [active=3]"]


def test_plain_lines_are_few():
    # 10,000 updates over 100 s: one line per 5 % up to 95 % (at most one per 2 s), then the last one
    # from close(): 20 lines, not 10,000.
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress(total=10_000, desc="mesh", unit="shape", file=out, interval_s=30, min_interval_s=2,
                        percent_step=5, clock=clock)
    for _ in range(10_000):
        clock.t += 0.01
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 20 and "\r" not in out.getvalue()
    assert lines[0].startswith("mesh: 500/10000 shapes (5.0%), 100 shape/s") and lines[-1].endswith("done")
    # A slow job with no total: a line every interval_s.
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress(desc="x", file=out, interval_s=30, clock=clock)
    for _ in range(100):
        clock.t += 1.0
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 3  # at 30, 60 and 90 s


def test_iteration_resume_offset_and_quiet_inner_loops():
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress(range(5), total=10, initial=5, desc="prepare", unit="shape", file=out, clock=clock)
    clock.t = 5.0
    assert list(bar) == [0, 1, 2, 3, 4]
    # the 5 shapes found done at the start are not part of the rate: 5 shapes in 5 s
    assert out.getvalue().splitlines()[-1] == "prepare: 10/10 shapes (100.0%), 1 shape/s, elapsed 5s, done"
    out = io.StringIO()
    for _ in PlainProgress(range(3), desc="ddim", leave=False, file=out):
        pass
    assert out.getvalue() == ""  # a short inner loop (leave=False) leaves nothing in the log
    out = io.StringIO()
    with progress(total=4, desc="quiet", file=out, disable=True) as bar:
        bar.update(4)
    assert out.getvalue() == "" and bar.n == 4


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 45, 185, 7620)] == ["0s", "45s", "3m 05s", "2h 07m"]


def test_every_stage_makes_its_progress_display_through_the_helper():
    # A bare tqdm writes carriage-return redraws into log files. Files still on their way to the
    # helper are listed; the list must only shrink.
    from pathlib import Path

    pending = {"evaluation/fpd.py"}
    src = Path(__file__).resolve().parents[1] / "src" / "hyperdiffusion"
    direct = {f.relative_to(src).as_posix() for f in src.rglob("*.py") if "tqdm" in f.read_text()}
    assert direct - {"progress.py"} <= pending, direct - {"progress.py"} - pending
