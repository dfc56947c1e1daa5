"""The weight-space transformer: paper sizes, tokens, timestep embedding, initialisation."""

import math

import pytest
import torch

from hyperdiffusion.fields.mlp import MLPConfig
from hyperdiffusion.denoisers.transformer import (PAPER_PRESETS, TimestepEmbedder, TransformerConfig, WeightTransformer,
                                        build_model, count_parameters, token_sizes)


def expected_count(n_embd: int, n_layer: int, sizes: list[int]) -> int:
    """Closed form: blocks (12 n^2 + 13 n each), per-token in/out projections, pos_emb, two LayerNorms."""
    block = 12 * n_embd**2 + 13 * n_embd
    return n_layer * block + (sum(sizes) + 257) * n_embd + sum(sizes) * n_embd + (len(sizes) + 1) * n_embd + 4 * n_embd


@pytest.mark.parametrize("name,mlp,count", [
    ("plane", MLPConfig(), 1_407_225_600),
    ("chair", MLPConfig(), 1_407_225_600),
    ("car", MLPConfig(), 672_729_600),
    ("4d", MLPConfig(in_dim=4), 408_332_160),
])
def test_paper_preset_parameter_counts(name, mlp, count):
    model = build_model(PAPER_PRESETS[name], mlp, device="meta")
    n = count_parameters(model)
    assert n == count == expected_count(PAPER_PRESETS[name].n_embd, 12, token_sizes(mlp))
    if name == "plane":
        assert round(n / 1e9, 2) == 1.41  # the paper's "~1.41 B"


def test_token_sizes():
    assert token_sizes(MLPConfig()) == [3456, 128, 16384, 128, 16384, 128, 128, 1]
    assert MLPConfig(in_dim=4).n_params == 37_889
    chunks = token_sizes(MLPConfig(), "chunks", 4096)
    assert sum(chunks) == 36_737 and chunks[:-1] == [4096] * 8 and chunks[-1] == 36_737 - 8 * 4096


def test_timestep_embedding():
    emb = TimestepEmbedder(128, 20)
    e = emb(torch.tensor([0, 3, 499]))
    assert e.shape == (3, 257)
    assert torch.all(e[0, :128] == 0) and torch.all(e[0, 128:256] == 1) and e[0, 256] == 0
    assert e[2, 256] == 499
    assert e[1, 0].item() == pytest.approx(math.sin(3.0))  # lowest frequency is 2^0
    assert e[1, 127].item() == pytest.approx(math.sin(3.0 * 2**20), abs=1e-6)  # highest is 2^20


def small(tokenizer="layers", chunk_size=None):
    mlp = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)
    torch.manual_seed(0)
    return WeightTransformer(TransformerConfig(n_embd=32, n_layer=2, n_head=4, tokenizer=tokenizer,
                                               chunk_size=chunk_size), mlp), mlp


@pytest.mark.parametrize("tokenizer,chunk", [("layers", None), ("chunks", 100)])
def test_forward_shape_and_init(tokenizer, chunk):
    model, mlp = small(tokenizer, chunk)
    x = torch.randn(5, mlp.n_params)
    y = model(x, torch.tensor([0, 1, 2, 100, 499]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.all(model.pos_emb == 0)
    w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    n_tokens = len(model.splits) + 1
    assert model.pos_emb.shape == (1, n_tokens, 32)


def test_output_depends_on_timestep_and_every_token():
    model, mlp = small()
    x = torch.randn(2, mlp.n_params)
    y0 = model(x, torch.tensor([0, 0]))
    assert not torch.allclose(y0, model(x, torch.tensor([400, 400])))
    # No mask: changing the last bias changes the output of the first token.
    x2 = x.clone()
    x2[:, -1] += 1.0
    first = model.splits[0]
    assert not torch.allclose(model(x2, torch.tensor([0, 0]))[:, :first], y0[:, :first])


def _reference_forward(model: WeightTransformer, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """G.pt's forward written out with plain tensor algebra on the model's own parameters: explicit
    softmax attention, hand-written LayerNorm and GELU, no nn.Module calls, float64 throughout."""
    p = {k: v.double() for k, v in model.state_dict().items()}

    def ln(h, name):
        mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mu) / torch.sqrt(var + 1e-5) * p[f"{name}.weight"] + p[f"{name}.bias"]

    def lin(h, name, bias=True):
        return h @ p[f"{name}.weight"].T + (p[f"{name}.bias"] if bias else 0)

    freqs = 2.0 ** torch.linspace(0, model.cfg.max_freq_log2, model.cfg.num_frequencies, dtype=torch.float64)
    tt = t.double()[:, None]
    t_tok = torch.cat([torch.sin(tt * freqs), torch.cos(tt * freqs), tt], dim=1)
    pieces = list(torch.split(x.double(), model.splits, dim=1)) + [t_tok]
    h = torch.stack([lin(piece, f"encoders.{i}", bias=False) for i, piece in enumerate(pieces)], dim=1)
    h = ln(h, "ln_in") + p["pos_emb"]
    b, n, c = h.shape
    heads = model.cfg.n_head
    for i in range(model.cfg.n_layer):
        a = ln(h, f"blocks.{i}.ln1")
        q, k, v = lin(a, f"blocks.{i}.attn.qkv").split(c, dim=-1)
        q, k, v = (z.reshape(b, n, heads, c // heads).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, c)
        h = h + lin(y, f"blocks.{i}.attn.proj")
        m = lin(ln(h, f"blocks.{i}.ln2"), f"blocks.{i}.mlp.0")
        m = 0.5 * m * (1 + torch.erf(m / math.sqrt(2)))  # exact GELU
        h = h + lin(m, f"blocks.{i}.mlp.2")
    h = ln(h, "ln_f")
    return torch.cat([lin(h[:, i], f"decoders.{i}", bias=False) for i in range(len(model.splits))], dim=1)


@pytest.mark.parametrize("tokenizer,chunk", [("layers", None), ("chunks", 100)])
def test_forward_matches_an_independent_reference(tokenizer, chunk):
    model, mlp = small(tokenizer, chunk)
    with torch.no_grad():  # non-trivial weights everywhere, including pos_emb and the LayerNorms
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    x, t = torch.randn(3, mlp.n_params), torch.tensor([0, 17, 499])
    with torch.no_grad():
        ours = model(x, t).double()
    ref = _reference_forward(model, x, t)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()
