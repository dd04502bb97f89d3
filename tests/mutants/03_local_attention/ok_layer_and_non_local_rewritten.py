# mutant: correct: the layer with reshape and a chunk test written differently; the non-local block with einsum and an explicit zeros init
# fails: none
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
        B, C, H, W = x.shape
        q, k, v = (p(x).reshape(B, self.heads, -1, H, W) for p in (self.q_proj, self.k_proj, self.v_proj))
        if return_weights or not self.chunk:
            out, weights = local_attention(q, k, v, self.rel_h, self.rel_w, self.kernel_size)
        else:
            out = local_attention_chunked(q, k, v, self.rel_h, self.rel_w, self.kernel_size, self.chunk)
        y = out.reshape(B, -1, H, W)
        return (y, weights) if return_weights else y


# %% non_local
class NonLocalBlock(nn.Module):
    """Wang et al.'s non-local block (embedded Gaussian), attention between all pixels:

    ``z = x + BN(W_z (softmax(theta(x)^T phi(x)) g(x)))``, with 1x1 convolutions ``theta, phi, g``
    to ``inner = channels // 2`` channels and ``W_z`` back. The BN's scale starts at zero, so the
    block starts as the identity and can be inserted into a trained network. ``x [B, C, H, W]``;
    memory ``B * (H * W)^2`` for the weights.
    """

    def __init__(self, channels: int, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.W_z = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        with torch.no_grad():
            self.bn.weight.zero_()

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        theta, phi, g = (m(x).flatten(2) for m in (self.theta, self.phi, self.g))
        f = torch.einsum("bci,bcj->bij", theta, phi).softmax(dim=-1)
        y = torch.einsum("bij,bcj->bci", f, g).reshape(B, -1, H, W)
        return x + self.bn(self.W_z(y))
