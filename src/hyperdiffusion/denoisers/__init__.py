"""Denoising networks: `model(x_t, t) -> prediction`, each rebuilt from a name and a config dict.

Every denoiser module defines a config dataclass and a `build(config: dict, data_shape) -> nn.Module`;
`DENOISERS` maps the name a checkpoint records to that builder. A new network is one module here
and one line in `DENOISERS`.

    transformer.py  G.pt's weight-space transformer (HyperDiffusion's denoiser)
    unet3d.py       a 3D UNet over voxel grids (the paper's voxel baseline)
"""
