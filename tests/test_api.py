"""The package's top level is a short public API: the stage functions and the loaders."""

import hyperdiffusion as hd


def test_stage_functions_and_loaders_are_importable_from_the_top():
    from hyperdiffusion.data.prepare import prepare
    from hyperdiffusion.diffusion.checkpoint import load_denoiser
    from hyperdiffusion.diffusion.sample import sample
    from hyperdiffusion.diffusion.train import train
    from hyperdiffusion.evaluation.compare import compare
    from hyperdiffusion.evaluation.evaluate import evaluate
    from hyperdiffusion.fields.fit import fit_dataset
    from hyperdiffusion.fields.mesh import mesh_weights
    from hyperdiffusion.fields.mlp import load_weight_set

    assert hd.prepare is prepare and hd.fit is fit_dataset and hd.mesh is mesh_weights
    assert hd.train is train and hd.sample is sample and hd.evaluate is evaluate and hd.compare is compare
    assert hd.load_weight_set is load_weight_set and hd.load_checkpoint is load_denoiser
    assert {"mlp3d", "mlp4d", "voxel", "voxel4d", "points"} <= set(hd.REPRESENTATIONS)
    assert set(hd.__all__) <= set(dir(hd))
    try:
        hd.no_such_stage  # noqa: B018
    except AttributeError as e:
        assert "no_such_stage" in str(e)
    else:
        raise AssertionError("unknown names must raise AttributeError")
