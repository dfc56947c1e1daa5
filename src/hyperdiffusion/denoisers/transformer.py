"""The weight-space denoiser: G.pt's transformer as HyperDiffusion uses it (paper Sec. 3.2).

A flat MLP weight vector is cut into tokens, one per state-dict tensor (the
paper MLP: 8 tokens of 3456, 128, 16384, 128, 16384, 128, 128 and 1 values),
plus one token for the diffusion timestep. Each token has its own Linear (no
bias) to the model width, then a shared LayerNorm; a learned positional
embedding starts at zero; pre-LN GPT blocks without mask or dropout; a final
LayerNorm and one Linear (no bias) per token back to that token's size; the
outputs are concatenated into a vector of the input's layout (REFERENCE.md,
"Weight-space diffusion"; G.pt: Peebles et al. 2022, arXiv 2209.12892).

G.pt's other split policy, fixed-size chunks of the flat vector, is available
as `tokenizer="chunks"`: it keeps tokens of equal size where the per-tensor
split puts 16,384 values in one token and a single bias in another.

`PAPER_PRESETS` lists the published sizes (DiT's `DiT_models` registry).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TOKENIZERS = ("layers", "chunks")


@dataclass(frozen=True)
class TransformerConfig:
    """Defaults are the paper's airplane/chair model (n_embd 2880, 12 layers, 16 heads, ~1.41 B params)."""

    n_embd: int = 2880
    n_layer: int = 12
    n_head: int = 16
    num_frequencies: int = 128  # timestep embedding: 2^linspace(0, max_freq_log2, num_frequencies)
    max_freq_log2: int = 20
    tokenizer: str = "layers"  # "layers": one token per tensor (paper); "chunks": fixed-size pieces
    chunk_size: int | None = None  # tokenizer="chunks" only
    # Not in the paper: > 0 adds one class token (an embedding of num_classes + 1 entries, the last the
    # "null" class of classifier-free guidance; diffusion/guidance.py). 0 = unconditional (the paper).
    num_classes: int = 0

    def __post_init__(self) -> None:
        assert self.n_embd % self.n_head == 0, f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
        assert self.tokenizer in TOKENIZERS, f"tokenizer must be one of {TOKENIZERS}; got {self.tokenizer!r}"
        assert self.tokenizer != "chunks" or (self.chunk_size or 0) > 0, "tokenizer='chunks' needs chunk_size > 0"
        assert self.num_classes >= 0, f"num_classes must be >= 0; got {self.num_classes}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


PAPER_PRESETS: dict[str, TransformerConfig] = {
    "plane": TransformerConfig(n_embd=2880, n_layer=12, n_head=16),
    "chair": TransformerConfig(n_embd=2880, n_layer=12, n_head=16),
    "car": TransformerConfig(n_embd=1920, n_layer=12, n_head=16),
    "4d": TransformerConfig(n_embd=1440, n_layer=12, n_head=16),  # for MLPConfig(in_dim=4)
    # Not from the paper: small enough that the demo trains in minutes on a 2-core CPU
    # (benchmarks/RESULTS.md has the measured step time).
    "cpu": TransformerConfig(n_embd=128, n_layer=4, n_head=4),
}


def preset(name: str, **overrides: Any) -> TransformerConfig:
    if name not in PAPER_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PAPER_PRESETS)}")
    return replace(PAPER_PRESETS[name], **overrides)


def token_sizes(layout, tokenizer: str = "layers", chunk_size: int | None = None) -> list[int]:
    """Sizes of the weight tokens, in flat order, summing to the vector's length.

    :param layout: the sizes of the tensors the flat vector is made of, in order (an MLP's
        state-dict tensors), or an object with `tensor_shapes()` such as `MLPConfig`.
    """
    sizes = ([math.prod(shape) for _, shape in layout.tensor_shapes()] if hasattr(layout, "tensor_shapes")
             else [int(s) for s in layout])
    if tokenizer == "layers":
        return sizes
    if tokenizer == "chunks":
        total = sum(sizes)
        n_full, rest = divmod(total, int(chunk_size))
        return [int(chunk_size)] * n_full + ([rest] if rest else [])
    raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {TOKENIZERS}")


class TimestepEmbedder(nn.Module):
    """Raw integer t -> [sin(f t) x F, cos(f t) x F, t] with f = 2^linspace(0, max_log2, F) (G.pt)."""

    def __init__(self, num_frequencies: int = 128, max_freq_log2: int = 20):
        super().__init__()
        freqs = 2.0 ** torch.linspace(0, max_freq_log2, num_frequencies, dtype=torch.float64)
        self.register_buffer("frequencies", freqs, persistent=False)
        self.dim = 2 * num_frequencies + 1

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # float64: t * 2^20 reaches 5e8, where float32 sin depends on the device's implementation;
        # in float64 the embedding is the same on every machine.
        t = t.reshape(-1, 1).to(torch.float64)
        scaled = t * self.frequencies.to(t.device)
        return torch.cat([torch.sin(scaled), torch.cos(scaled), t], dim=-1).float()


class SelfAttention(nn.Module):
    """Multi-head self-attention without mask (all tokens see all tokens)."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)  # G.pt's separate key/query/value Linears, fused
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, head_dim)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-LN GPT block: x + attn(ln(x)), then x + mlp(ln(x)); GELU MLP of width 4 n_embd, no dropout."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class WeightTransformer(nn.Module):
    """Denoiser over flat weight vectors: forward(x_t [B, P], t [B], y [B] | None) -> [B, P].

    With `num_classes` > 0 a class token follows the timestep token; y = None or y = num_classes
    is the null class (unconditional). Without classes, y must be None.

    :param layout: sizes of the tensors the vector is made of, in flat order (or an `MLPConfig`);
        `tokenizer="layers"` makes one token of each.
    """

    def __init__(self, cfg: TransformerConfig, layout):
        super().__init__()
        self.cfg = cfg
        self.splits = token_sizes(layout, cfg.tokenizer, cfg.chunk_size)
        self.t_embed = TimestepEmbedder(cfg.num_frequencies, cfg.max_freq_log2)
        n_tokens = len(self.splits) + 1 + (cfg.num_classes > 0)  # + the timestep token (G.pt) [+ a class token]
        self.encoders = nn.ModuleList(nn.Linear(s, cfg.n_embd, bias=False) for s in self.splits + [self.t_embed.dim])
        self.ln_in = nn.LayerNorm(cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, n_tokens, cfg.n_embd))
        self.blocks = nn.Sequential(*[Block(cfg.n_embd, cfg.n_head) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        # Only the weight tokens are decoded; the timestep token's output is dropped.
        self.decoders = nn.ModuleList(nn.Linear(cfg.n_embd, s, bias=False) for s in self.splits)
        if cfg.num_classes > 0:  # created last, so an unconditional model's initialisation is unchanged
            self.class_embed = nn.Embedding(cfg.num_classes + 1, cfg.n_embd)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # G.pt / minGPT: Linear weights N(0, 0.02), biases 0, LayerNorm identity. pos_emb stays 0.
        if isinstance(module, (nn.Linear, nn.Embedding)):  # minGPT's token embeddings: N(0, 0.02) too
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        assert x.dim() == 2 and x.shape[1] == sum(self.splits), \
            f"expected weight vectors [B, {sum(self.splits)}]; got {tuple(x.shape)}"
        pieces = list(torch.split(x, self.splits, dim=1)) + [self.t_embed(t).to(x.dtype)]
        h = torch.stack([enc(p) for enc, p in zip(self.encoders, pieces)], dim=1)  # (B, tokens, n_embd)
        if self.cfg.num_classes > 0:
            if y is None:  # unconditional: the null class
                y = torch.full((x.shape[0],), self.cfg.num_classes, dtype=torch.long, device=x.device)
            h = torch.cat([h, self.class_embed(y.to(x.device)).to(h.dtype).unsqueeze(1)], dim=1)
        else:
            assert y is None, "this model has no classes (num_classes 0); train with --condition class"
        h = self.blocks(self.ln_in(h) + self.pos_emb)
        h = self.ln_f(h)
        return torch.cat([dec(h[:, i]) for i, dec in enumerate(self.decoders)], dim=1)


def build_model(cfg: TransformerConfig, layout, device: str | torch.device = "cpu") -> WeightTransformer:
    """Construct on `device`; "meta" builds without allocating (for parameter counts of the 1.4 B presets)."""
    with torch.device(device):
        return WeightTransformer(cfg, layout)


def build(config: dict[str, Any], sample_shape: tuple[int, ...], layout: list[int] | None = None) -> WeightTransformer:
    """The denoiser registry's builder (denoisers/__init__.py): flat samples, tokens from `layout`."""
    assert len(sample_shape) == 1, f"the weight transformer denoises flat vectors; got samples of shape {sample_shape}"
    return WeightTransformer(TransformerConfig.from_dict(config), layout or [sample_shape[0]])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
