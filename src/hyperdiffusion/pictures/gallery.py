"""A self-contained gallery page for a run folder: preview images plus an interactive 3D view.

The viewer is three.js r147 (MIT, vendored in `hyperdiffusion/web/` from the npm
registry), loaded with classic <script> tags and the meshes embedded in a
`meshes.js` file, so the page works from file:// with no server and no CDN:
Chromium refuses ES modules and fetch() from file:// pages, classic scripts not.

An entry of the viewer may be an animation (a 4D sample: a list of per-frame meshes, each
with its own topology, docs/4D.md): the page builds one mesh per frame and shows them in
turn on a timer, the way the animated GLB switches frame nodes (mesh4d.animated_glb).
"""

from __future__ import annotations

import html
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import trimesh

from hyperdiffusion.io import write_bytes

WEB_ASSETS = ("three.min.js", "OrbitControls.js", "THREE_LICENSE")
MAX_VIEWER_FACES = 20_000  # keeps meshes.js small; the full meshes stay on disk
MAX_FRAME_FACES = 5_000  # per frame of an animation: 16 frames stay below 4x one still mesh
FRAMES_PER_SECOND = 8  # the animated GIF previews' pace (mesh4d.save_animation)


def _mesh_payload(mesh: trimesh.Trimesh, max_faces: int = MAX_VIEWER_FACES) -> dict:
    if len(mesh.faces) > max_faces:
        try:
            mesh = mesh.simplify_quadric_decimation(face_count=max_faces)
        except Exception:  # decimation is an optional nicety; show the full mesh instead
            pass
    v = np.round(np.asarray(mesh.vertices, np.float32), 4)
    return {"v": v.reshape(-1).tolist(), "f": np.asarray(mesh.faces, np.int32).reshape(-1).tolist()}


def _entry_payload(entry) -> dict | None:
    """A still mesh -> {"v", "f"}; an animation (list of frame meshes, None for an empty frame) ->
    {"frames": [...]} with null frames kept, so the timing stays that of the sequence."""
    if isinstance(entry, trimesh.Trimesh):
        return _mesh_payload(entry) if len(entry.faces) else None
    frames = [_mesh_payload(m, MAX_FRAME_FACES) if m is not None and len(m.faces) else None for m in entry]
    return {"frames": frames} if any(f is not None for f in frames) else None


def write_gallery(run_dir: str | Path, title: str, images: list[tuple[str, str]],
                  meshes: dict[str, trimesh.Trimesh | list[trimesh.Trimesh | None]], table_html: str = "") -> Path:
    """Write `index.html` (+ web assets, meshes.js) into `run_dir`.

    :param images: (caption, path relative to run_dir) pairs shown in order.
    :param meshes: name -> mesh, or name -> list of per-frame meshes (an animation, played in a loop),
        offered in the 3D viewer's drop-down. Entries with no face are left out.
    """
    run_dir = Path(run_dir)
    web = run_dir / "web"
    web.mkdir(parents=True, exist_ok=True)
    for name in WEB_ASSETS:
        with resources.as_file(resources.files("hyperdiffusion.pictures.web") / name) as src:
            shutil.copyfile(src, web / name)
    payload = {name: p for name, p in ((n, _entry_payload(m)) for n, m in meshes.items()) if p is not None}
    write_bytes(web / "meshes.js", ("window.MESHES = " + json.dumps(payload, separators=(",", ":")) + ";\n").encode())
    figures = "\n".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for c, p in images)
    page = _TEMPLATE.replace("{{FPS}}", str(FRAMES_PER_SECOND)).replace("{{TITLE}}", html.escape(title)).replace("{{FIGURES}}", figures).replace(
        "{{TABLE}}", table_html)
    write_bytes(run_dir / "index.html", page.encode())
    return run_dir / "index.html"


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{TITLE}}</title>
<style>
 body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
 figure{margin:1em 0} img{max-width:100%;border:1px solid #ddd} figcaption{color:#555}
 #viewer{width:100%;height:480px;border:1px solid #ddd;background:#fafafa}
 table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
</style></head>
<body data-status="loading" data-errors="0">
<script>
/* Count every error the page meets (exceptions, failed resources, console.error) in
   data-errors, so a headless browser's DOM dump tells whether the page loaded cleanly. */
(function () {
  function bump() { document.body.dataset.errors = String(Number(document.body.dataset.errors) + 1); }
  window.addEventListener('error', bump, true);
  var orig = console.error; console.error = function () { bump(); orig.apply(console, arguments); };
})();
</script>
<h1>{{TITLE}}</h1>
{{TABLE}}
<h2>Interactive view</h2>
<p><label>Mesh: <select id="pick"></select></label> <label><input type="checkbox" id="play" checked> play</label>
 <span id="frame"></span> (drag to rotate, scroll to zoom)</p>
<div id="viewer"></div>
<h2>Previews</h2>
{{FIGURES}}
<script src="web/three.min.js"></script>
<script src="web/OrbitControls.js"></script>
<script src="web/meshes.js"></script>
<script>
(function () {
  var box = document.getElementById('viewer');
  var renderer;
  try { renderer = new THREE.WebGLRenderer({antialias: true}); }
  catch (e) { box.textContent = 'WebGL is not available in this browser.'; document.body.dataset.status = 'no-webgl'; return; }
  renderer.setSize(box.clientWidth, box.clientHeight);
  box.appendChild(renderer.domElement);
  var scene = new THREE.Scene(); scene.background = new THREE.Color(0xfafafa);
  var camera = new THREE.PerspectiveCamera(35, box.clientWidth / box.clientHeight, 0.01, 100);
  camera.position.set(1.2, 0.9, 1.6);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x666666, 0.8));
  var sun = new THREE.DirectionalLight(0xffffff, 0.6); sun.position.set(1, 2, 1.5); scene.add(sun);
  var controls = new THREE.OrbitControls(camera, renderer.domElement);
  var material = new THREE.MeshStandardMaterial({color: 0x8fa8c8, roughness: 0.7, side: THREE.DoubleSide});
  var current = null, frames = [], frame = 0, playing = true;
  var info = document.getElementById('frame');
  function geometry(m) {
    var g = new THREE.BufferGeometry();
    if (m) { g.setAttribute('position', new THREE.Float32BufferAttribute(m.v, 3)); g.setIndex(m.f); g.computeVertexNormals(); }
    g.computeBoundingBox();
    return g;
  }
  function showFrame(k) {  // animations: one mesh per frame, only the current one visible
    frames.forEach(function (f, i) { f.visible = i === k; });
    frame = k;
    info.textContent = frames.length > 1 ? 'frame ' + (k + 1) + ' / ' + frames.length : '';
    document.body.dataset.frame = String(k);
  }
  function show(name) {
    if (current) { scene.remove(current); current.traverse(function (o) { if (o.geometry) o.geometry.dispose(); }); }
    var entry = window.MESHES[name], list = entry.frames || [entry];
    current = new THREE.Group(); frames = [];
    var bounds = new THREE.Box3();  // the whole sequence's box: the camera stays still while it plays
    list.forEach(function (m) {
      var g = geometry(m), mesh = new THREE.Mesh(g, material);
      if (m) bounds.union(g.boundingBox);
      frames.push(mesh); current.add(mesh);
    });
    scene.add(current); showFrame(0);
    play.parentNode.style.display = frames.length > 1 ? '' : 'none';
    var sphere = bounds.getBoundingSphere(new THREE.Sphere()), c = sphere.center, r = sphere.radius || 1;
    controls.target.copy(c);
    camera.position.set(c.x + 1.6 * r, c.y + 1.2 * r, c.z + 2.2 * r);  // 3/4 view that frames the sphere
    controls.update();
  }
  var play = document.getElementById('play');
  play.addEventListener('change', function () { playing = play.checked; });
  setInterval(function () {
    if (playing && frames.length > 1) {
      showFrame((frame + 1) % frames.length);
      document.body.dataset.ticks = String(Number(document.body.dataset.ticks || 0) + 1);
    }
  }, 1000 / {{FPS}});
  var pick = document.getElementById('pick');
  Object.keys(window.MESHES).forEach(function (n) { var o = document.createElement('option'); o.textContent = n; pick.appendChild(o); });
  pick.addEventListener('change', function () { show(pick.value); });
  if (pick.options.length) show(pick.options[0].value);
  (function loop() { requestAnimationFrame(loop); controls.update(); renderer.render(scene, camera); })();
  if (document.body.dataset.status === 'loading') document.body.dataset.status = 'ok';
})();
</script>
</body></html>
"""
