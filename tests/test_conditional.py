"""Class-conditional diffusion, classifier-free guidance, interpolation and completion on tiny models."""

from dataclasses import replace

import pytest
import torch

from hyperdiffusion.diffusion.sample import SampleConfig, sample_weights
from hyperdiffusion.diffusion.train import TrainConfig, load_denoiser, read_checkpoint, train
from hyperdiffusion.fields.mlp import MLPConfig, default_init, load_weight_set, save_weight_set
from hyperdiffusion.io import InputError

MLP = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)  # 545 parameters, 6 tokens
TINY = TrainConfig(preset="cpu", n_embd=32, n_layer=1, n_head=2, lr=3e-3, batch_size=8, max_steps=40,
                   ema_decay=0.9, log_every=20, ckpt_every=40, val_every_epochs=0, timesteps=100,
                   standardize=True, condition="class")


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """Two weight sets, "round" and "boxy" (their folder names), 4 MLPs each, and a conditional model on them."""
    root = tmp_path_factory.mktemp("cond")
    paths = []
    for i, name in enumerate(("round", "boxy")):
        w = default_init(MLP, 4, torch.Generator().manual_seed(i)) + 0.5 * i
        path = root / name / "weights.safetensors"
        save_weight_set(path, w, [f"{name}_{k}" for k in range(4)], MLP)
        paths.append(path.parent)
    out = root / "run"
    train([str(p) for p in paths], out, TINY, progress=False)
    return paths, out


def test_classes_are_recorded_and_the_model_has_a_class_token(two_classes):
    paths, out = two_classes
    _, meta = read_checkpoint(out)
    assert meta["condition"]["classes"] == ["round", "boxy"] and meta["condition"]["counts"] == [4, 4]
    assert meta["condition"]["drop_prob"] == 0.1 and meta["denoiser"]["config"]["num_classes"] == 2
    model, *_ = load_denoiser(out)
    assert model.class_embed.weight.shape == (3, 32)  # two classes and the null class
    with pytest.raises(InputError, match="condition class"):  # several datasets need a condition
        train([str(p) for p in paths], out.parent / "x", replace(TINY, condition=None), progress=False)
    with pytest.raises(InputError, match="classes"):  # resuming with the datasets swapped is refused
        train([str(p) for p in reversed(paths)], out, TINY, progress=False)


def test_guidance_zero_is_the_unconditional_sampler(two_classes, tmp_path):
    _, out = two_classes
    cfg = SampleConfig(n=3, steps=10, batch_size=3, mesh=False, device="cpu", seed=5)
    uncond = load_weight_set(sample_weights(out, tmp_path / "u", cfg, progress=False)).weights
    w0 = load_weight_set(sample_weights(out, tmp_path / "g0", replace(cfg, class_name="boxy", guidance=0.0),
                                        progress=False)).weights
    assert torch.equal(uncond, w0)
    w1 = load_weight_set(sample_weights(out, tmp_path / "g1", replace(cfg, class_name="boxy", guidance=1.0),
                                        progress=False)).weights
    w3 = load_weight_set(sample_weights(out, tmp_path / "g3", replace(cfg, class_name="boxy", guidance=3.0),
                                        progress=False)).weights
    assert not torch.equal(w1, uncond) and not torch.equal(w3, w1)
    with pytest.raises(InputError, match="unknown class"):
        sample_weights(out, tmp_path / "x", replace(cfg, class_name="chair"), progress=False)


def test_guidance_combines_the_two_predictions():
    from hyperdiffusion.diffusion.guidance import guided

    def model(x, t, y=None):  # the null class (2) predicts 0, the others their label
        return torch.zeros_like(x) if y is None or int(y[0]) == 2 else torch.full_like(x, float(y[0]) + 1)

    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    assert torch.equal(guided(model, 1, 2.5, 2)(x, t), torch.full((2, 3), 5.0))  # 0 + 2.5 (2 - 0)
    assert torch.equal(guided(model, 0, 0.0, 2)(x, t), torch.zeros(2, 3))


def test_conditional_voxel_unet_takes_a_class():
    from hyperdiffusion.denoisers import build_denoiser, get_denoiser

    cfg = get_denoiser("unet3d").config("cpu", num_classes=3)
    net = build_denoiser("unet3d", cfg, (1, 8, 8, 8)).eval()
    for p in net.parameters():  # the zero-initialised convolutions would hide the class
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(2, 1, 8, 8, 8), torch.tensor([3, 3])
    a, b = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
    assert not torch.allclose(a, b) and torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))
