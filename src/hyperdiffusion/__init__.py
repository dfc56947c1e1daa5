"""HyperDiffusion: generating implicit neural fields with weight-space diffusion.

Erkoç, Ma, Shan, Nießner, Dai, ICCV 2023 (arXiv 2303.17015).

The pipeline, one module per stage:
    prepare  -> meshes to normalised shapes, occupancy samples, reference clouds
    fit      -> one occupancy MLP per shape, many shapes at once
    mesh     -> any set of MLP weights back to meshes and point clouds
    train    -> a transformer diffusion model over the MLP weights
    sample   -> new weight vectors, then meshes through `mesh`
    evaluate -> MMD / COV / 1-NNA (Chamfer, EMD), FPD, novelty
"""

__version__ = "0.1.0"
