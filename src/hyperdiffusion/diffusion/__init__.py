"""Stages 3-4, the diffusion stack, the same for every representation (representations/):

    gaussian.py     the Gaussian diffusion: schedules, loss, DDPM and DDIM samplers (model-agnostic)
    train.py        the `train` stage: any representation's training tensors -> a checkpoint
    sample.py       the `sample` stage: a checkpoint alone -> samples -> meshes and clouds
    checkpoint.py   self-describing checkpoints: representation, denoiser, diffusion, weights, state
    standardize.py  per-coordinate standardisation of the training tensors (optional)
    runtime.py      device, precision and seeded-randomness helpers shared by train and sample
"""
