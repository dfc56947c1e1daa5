"""Pictures of what the pipeline makes: a headless renderer and an HTML gallery.

    render.py   shaded z-buffer renders of meshes, grids of them, the `render` command
    gallery.py  index.html with an interactive three.js view (assets in web/)
"""
