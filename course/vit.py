"""The Vision Transformer (Dosovitskiy et al., 2021): the course's answers to assignment 04, and the
adapter that loads ``torchvision.models.VisionTransformer``'s weights into them.

"An image is worth 16x16 words": the image is cut into ``p x p`` patches, each flattened and mapped by
one linear layer to a ``D``-dimensional token (the same as a ``Conv2d(C, D, p, stride=p)``), a learned
class token is put in front, learned position embeddings are added, and a pre-norm transformer encoder
(the NLP one, unchanged) mixes the tokens; the classifier reads the class token (or the mean of the
patch tokens) after a final LayerNorm.

Layouts (``p`` patch size, ``gh = H // p`` and ``gw = W // p`` the patch grid, ``N = gh * gw`` patches,
``T = N + 1`` tokens with the class token, ``D`` the width, ``nh`` heads):

- images: ``Tensor[B, C, H, W]``;
- :func:`patchify`: ``Tensor[B, N, C * p * p]``; patch ``n = r * gw + c`` is the one at grid row ``r``,
  column ``c`` (raster order, as ``Conv2d(...).flatten(2)``), flattened in ``(channel, row, column)``
  order, the order of a ``Conv2d`` weight ``[D, C, p, p]`` flattened: ``linear.weight = conv.weight.reshape(D, -1)``;
- tokens: ``Tensor[B, T, D]``, the class token first;
- attention weights of one block: ``Tensor[B, nh, T, T]`` (rows: queries, sum to 1);
- ``pos_embed``: ``Tensor[1, T, D]`` (class token's position first).

Parameter names follow the notebook's skeletons; :func:`torchvision_names` maps them to torchvision's
once, here, so that a student never maps names. Withheld from the student copy while assignment 04 is
open, except the adapters (:mod:`autograder.classroom`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["patchify", "LinearPatchEmbedding", "ConvPatchEmbedding", "ViTBlock", "ViT", "soft_cross_entropy",
           "attention_rollout", "position_similarity", "torchvision_block_names", "torchvision_names",
           "load_torchvision_weights"]


# ---------------------------------------------------------------------------------------------------
# part 1: patches
# ---------------------------------------------------------------------------------------------------
def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``Tensor[B, C, H, W] -> Tensor[B, N, C * p * p]``: non-overlapping ``p x p`` patches in raster order,
    each flattened as (channel, row, column). ``H`` and ``W`` must be multiples of ``p``."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
    x = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


# ---------------------------------------------------------------------------------------------------
# part 2: patch embedding, two ways
# ---------------------------------------------------------------------------------------------------
class LinearPatchEmbedding(nn.Module):
    """Flattened patches through one ``nn.Linear(C * p * p, D)`` named ``proj``: ``[B, C, H, W] -> [B, N, D]``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size * patch_size, dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(patchify(images, self.patch_size))


class ConvPatchEmbedding(nn.Module):
    """One ``nn.Conv2d(C, D, p, stride=p)`` named ``proj``, its ``[B, D, gh, gw]`` map read as tokens:
    ``[B, C, H, W] -> [B, N, D]`` (raster order)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, D, gh, gw) -> (B, N, D)


# ---------------------------------------------------------------------------------------------------
# part 3: the pre-norm encoder block
# ---------------------------------------------------------------------------------------------------
class ViTBlock(nn.Module):
    """ViT's pre-norm block: ``x = x + Drop(MSA(LN1(x))); x = x + MLP(LN2(x))``, ``Tensor[B, T, D] -> [B, T, D]``.

    Submodules: ``norm1``, ``norm2`` (LayerNorm, eps 1e-6), ``attn`` (``nn.MultiheadAttention``,
    ``batch_first``, dropout ``attention_dropout`` on the weights), ``dropout`` (on the attention branch),
    ``mlp = Sequential(Linear(D, mlp_dim), GELU(), Dropout, Linear(mlp_dim, D), Dropout)``. With
    ``keep_attention = True`` a forward stores the attention weights ``Tensor[B, nh, T, T]`` (detached) in
    ``attention``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))
        self.keep_attention = False
        self.attention: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        a, w = self.attn(h, h, h, need_weights=self.keep_attention, average_attn_weights=False)
        self.attention = w.detach() if self.keep_attention else None  # (B, nh, T, T)
        x = x + self.dropout(a)
        return x + self.mlp(self.norm2(x))


# ---------------------------------------------------------------------------------------------------
# part 4: the Vision Transformer
# ---------------------------------------------------------------------------------------------------
class ViT(nn.Module):
    """``Tensor[B, C, H, W] -> logits Tensor[B, num_classes]``.

    ``patch_embed`` (:class:`ConvPatchEmbedding`, or :class:`LinearPatchEmbedding` with
    ``embedding="linear"``); with ``pool="cls"`` a ``cls_token`` ``Parameter[1, 1, D]`` (zeros) put in front
    of the patch tokens, with ``pool="mean"`` none; ``pos_embed`` ``Parameter[1, T, D]`` (normal, std 0.02)
    added to the tokens; ``dropout`` on the sum; ``blocks`` (``nn.ModuleList`` of :class:`ViTBlock`);
    ``norm`` (LayerNorm, eps 1e-6) after the last block; ``head`` (``nn.Linear(D, num_classes)``) on the
    class token (``pool="cls"``) or on the mean of the tokens (``pool="mean"``)."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_channels: int = 3, num_classes: int = 10,
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp_dim: int = 384, dropout: float = 0.0,
                 attention_dropout: float = 0.0, pool: str = "cls", embedding: str = "conv") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', not {pool!r}")
        if embedding not in ("conv", "linear"):
            raise ValueError(f"embedding must be 'conv' or 'linear', not {embedding!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.pool = pool
        embed = ConvPatchEmbedding if embedding == "conv" else LinearPatchEmbedding
        self.patch_embed = embed(in_channels, dim, patch_size)
        n_tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([ViTBlock(dim, heads, mlp_dim, dropout, attention_dropout)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T, D)
        x = self.dropout(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))


# ---------------------------------------------------------------------------------------------------
# part 5: the loss of the recipe
# ---------------------------------------------------------------------------------------------------
def soft_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits Tensor[B, K]`` against class indices ``LongTensor[B]`` or class
    probabilities ``Tensor[B, K]`` (mixup, cutmix), with label smoothing: the target becomes
    ``(1 - smoothing) * target + smoothing / K``. Equal to ``F.cross_entropy(logits, target,
    label_smoothing=smoothing)``; finite for any finite logits."""
    K = logits.shape[-1]
    if target.dim() == logits.dim() - 1:
        target = F.one_hot(target, K).to(logits.dtype)
    target = target * (1.0 - smoothing) + smoothing / K
    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


# ---------------------------------------------------------------------------------------------------
# part 6: attention rollout (Abnar and Zuidema, 2020)
# ---------------------------------------------------------------------------------------------------
def attention_rollout(attentions: Sequence[Tensor], residual: bool = True) -> Tensor:
    """How much each token's output draws on each input token through all the layers.

    ``attentions``: one ``Tensor[B, nh, T, T]`` per block, the first block first. Heads are averaged;
    with ``residual`` each layer's matrix becomes ``0.5 * A + 0.5 * I`` (the skip connection), rows
    renormalised. The rollout is the product ``A_L ... A_2 A_1``: ``Tensor[B, T, T]``, rows summing to 1;
    row 0 is what the class token draws from every input token."""
    result = None
    for w in attentions:
        a = w.mean(dim=1)  # (B, T, T)
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("attention_rollout needs the weights of at least one block")
    return result


# ---------------------------------------------------------------------------------------------------
# part 7: what the position embeddings learned
# ---------------------------------------------------------------------------------------------------
def position_similarity(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine similarity of every patch's position embedding with every other's, ``Tensor[gh, gw, gh, gw]``:
    ``out[r, c, r2, c2]`` compares the patch at grid row ``r``, column ``c`` with the one at ``(r2, c2)``.

    ``pos_embed``: ``Tensor[T, D]`` or ``Tensor[1, T, D]`` with ``T = gh * gw`` (no class token) or
    ``gh * gw + 1`` (the class token's embedding first: left out)."""
    gh, gw = grid
    pos = pos_embed.reshape(-1, pos_embed.shape[-1])  # (T, D)
    if pos.shape[0] == gh * gw + 1:
        pos = pos[1:]
    elif pos.shape[0] != gh * gw:
        raise ValueError(f"{pos.shape[0]} position embeddings do not fit a {gh}x{gw} grid (with or without a class token)")
    unit = F.normalize(pos, dim=-1)
    return (unit @ unit.T).reshape(gh, gw, gh, gw)


# ---------------------------------------------------------------------------------------------------
# the adapter: torchvision's names -> ours (answers nothing; ships with the student copy)
# ---------------------------------------------------------------------------------------------------
_BLOCK_PARTS = {"norm1": "ln_1", "norm2": "ln_2", "mlp.0": "mlp.0", "mlp.3": "mlp.3"}
_ATTENTION = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")


def torchvision_block_names() -> dict[str, str]:
    """The parameter names of the notebook's :class:`ViTBlock`, each with the name of the same parameter in
    ``torchvision.models.vision_transformer.EncoderBlock``."""
    names = {f"{a}.{t}": f"{b}.{t}" for a, b in _BLOCK_PARTS.items() for t in ("weight", "bias")}
    names.update({f"attn.{t}": f"self_attention.{t}" for t in _ATTENTION})
    return names


def torchvision_names(depth: int) -> dict[str, str]:
    """The parameter names of the notebook's :class:`ViT` (``pool="cls"``), each with the name of the same
    parameter in ``torchvision.models.VisionTransformer`` of ``depth`` layers."""
    names = {"patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
             "cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
             "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias",
             "head.weight": "heads.head.weight", "head.bias": "heads.head.bias"}
    for i in range(depth):
        names.update({f"blocks.{i}.{a}": f"encoder.layers.encoder_layer_{i}.{b}"
                      for a, b in torchvision_block_names().items()})
    return names


def load_torchvision_weights(model: nn.Module, tv: nn.Module) -> nn.Module:
    """Copy the weights of a ``torchvision.models.VisionTransformer`` ``tv`` into ``model`` (a ViT with the
    notebook's names, ``pool="cls"``, same sizes), or of a torchvision ``EncoderBlock`` into the notebook's
    :class:`ViTBlock`, and return ``model``. A linear patch embedding gets the convolution's kernel
    flattened (``weight.reshape(D, -1)``). Raises ``ValueError`` naming what is missing, left over or of
    another shape."""
    theirs = tv.state_dict()
    if "conv_proj.weight" in theirs:
        depth = sum(1 for name in theirs if name.endswith(".ln_1.weight"))
        names, what = torchvision_names(depth), f"the notebook's ViT (pool='cls', depth {depth})"
    else:
        names, what = torchvision_block_names(), "the notebook's ViTBlock"
    ours = model.state_dict()
    missing = [n for n in names if n not in ours]
    extra = [n for n in ours if n not in names]
    if missing or extra:
        raise ValueError(f"the model's parameters are not those of {what}: missing {missing[:6]}, "
                         f"unexpected {extra[:6]}")
    state = {}
    for n, t in names.items():
        w = theirs[t]
        if n == "patch_embed.proj.weight" and w.shape != ours[n].shape and w.numel() == ours[n].numel():
            w = w.reshape(ours[n].shape)  # a linear patch embedding: the kernel flattened (channel, row, column)
        if w.shape != ours[n].shape:
            raise ValueError(f"{n}: shape {list(ours[n].shape)} in the model, {list(w.shape)} in torchvision's {t}")
        state[n] = w
    model.load_state_dict(state)
    return model
