"""The neural fields HyperDiffusion diffuses: one small occupancy MLP per shape (paper Sec. 3.1).

    mlp.py   the MLP (positional encoding, 3 x 128 ReLU), flat weight vectors, weight-set files
    fit.py   stage 2: overfit one MLP per shape, many shapes per batch
    fit_eval.py  fit quality on the prepared evaluation set (eval.npz): IoU with interval, mesh scores
    mesh.py  any weight set back to meshes (marching cubes) and 2048-point clouds
"""
