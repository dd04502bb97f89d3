# mutant: heads split as (B, D, heads, H, W) and merged back the same way
# fails: grade_layer
# hint: heads split
# %% layer
class LocalAttention2d(nn.Module):
    """A stand-alone self-attention layer: a drop-in for a stride-1 ``K x K`` convolution.

    ``x [B, C_in, H, W] -> y [B, C_out, H, W]``: 1x1 projections (no bias) to queries, keys and values,
    split into ``heads`` heads of ``D = C_out // heads`` channels, local attention with relative
    embeddings ``rel_h, rel_w [heads, K, D // 2]``, heads concatenated. ``chunk``: rows at a time
    (:func:`local_attention_chunked`), ``None`` for all at once.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7, heads: int = 8,
                 chunk: int | None = None) -> None:
        super().__init__()
        if out_channels % heads or (out_channels // heads) % 2:
            raise ValueError(f"out_channels={out_channels} must split into {heads} heads of an even size")
        self.kernel_size, self.heads, self.chunk = kernel_size, heads, chunk
        D = out_channels // heads
        self.q_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.k_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.v_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(heads, kernel_size, D // 2))
        self.rel_w = nn.Parameter(torch.randn(heads, kernel_size, D // 2))

    def _split(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        return x.view(B, self.heads, C // self.heads, H, W)  # (B, N, D, H, W)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        B, _, H, W = x.shape
        C = self.q_proj.out_channels
        q, k, v = (p(x).view(B, C // self.heads, self.heads, H, W).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        if return_weights or self.chunk is None:
            out, weights = local_attention(q, k, v, self.rel_h, self.rel_w, self.kernel_size)
        else:
            out = local_attention_chunked(q, k, v, self.rel_h, self.rel_w, self.kernel_size, self.chunk)
        y = out.transpose(1, 2).flatten(1, 2)
        return (y, weights) if return_weights else y
