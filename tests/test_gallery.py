"""The gallery page loads in headless Chromium without errors and shows a WebGL canvas."""

import re
import shutil
import subprocess

import pytest
import trimesh

from hyperdiffusion.pictures.gallery import write_gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=4000"]


def dump_dom(url: str, profile) -> str:
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (CI installs Debian's chromium)")
def test_gallery_loads_cleanly_with_canvas(tmp_path):
    run = tmp_path / "run"
    write_gallery(run, "Test gallery", [], {"sphere": trimesh.creation.icosphere(2), "box": trimesh.creation.box()},
                  "<table><tr><td>1</td></tr></table>")
    dom = dump_dom((run / "index.html").as_uri(), tmp_path / "profile")
    assert 'data-status="ok"' in dom, dom[:500]
    assert 'data-errors="0"' in dom
    assert re.search(r"<canvas[^>]*>", dom)
    assert dom.count("<option>") == 2


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_gallery_reports_a_broken_asset(tmp_path):
    # The error counter is what the test above relies on: prove it sees a failure.
    run = tmp_path / "run"
    write_gallery(run, "Broken", [], {"box": trimesh.creation.box()})
    (run / "web" / "three.min.js").unlink()
    dom = dump_dom((run / "index.html").as_uri(), tmp_path / "profile")
    assert 'data-errors="0"' not in dom


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_gallery_plays_an_animation(tmp_path):
    # A 4D entry (per-frame meshes with their own topology, an empty frame kept in place) is played
    # frame after frame on the page's timer.
    run = tmp_path / "run"
    frames = [trimesh.creation.box().apply_translation([0.2 * k, 0, 0]) for k in range(3)] + [None]
    frames.insert(1, trimesh.creation.icosphere(1))
    write_gallery(run, "Animated", [], {"walker": frames, "still": trimesh.creation.box()})
    payload = (run / "web" / "meshes.js").read_text()
    assert payload.count('"v":') == 5 and '"frames":' in payload and "null" in payload
    dom = dump_dom((run / "index.html").as_uri(), tmp_path / "profile")
    assert 'data-status="ok"' in dom and 'data-errors="0"' in dom, dom[:500]
    ticks = re.search(r'data-ticks="(\d+)"', dom)
    assert ticks and int(ticks.group(1)) >= 5, dom[:500]  # ~8 frames a second over the 4 s virtual budget
    assert re.search(r'<span id="frame">frame \d / 5</span>', dom)
