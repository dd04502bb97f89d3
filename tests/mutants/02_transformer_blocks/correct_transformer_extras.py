# mutant: type hints, shape asserts, an _embed helper, an extra non-persistent buffer (the embedding scale)
# fails: none
# %% transformer
@dataclass
class TransformerConfig:
    src_vocab_size: int        # number of source token ids (specials included)
    tgt_vocab_size: int        # number of target token ids (specials included)
    d_model: int = 256         # width C of the residual stream
    n_heads: int = 8           # attention heads; d_model % n_heads == 0
    n_layers: int = 3          # encoder blocks = decoder blocks = n_layers
    d_ff: int = 1024           # hidden width of the feed-forward networks
    dropout: float = 0.1       # on embeddings, attention weights, FFN hidden units and residual branches
    norm_first: bool = True    # pre-norm (True) or post-norm (False) blocks
    tie_weights: bool = True   # share the target embedding matrix with the output projection
    max_len: int = 256         # longest sequence the positional encoding covers
    pad_id: int = 0            # padding token id (Vocab.PAD)


class Transformer(nn.Module):
    """Encoder-decoder Transformer for translation. Token ids in, next-token logits out."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.src_embed = nn.Embedding(cfg.src_vocab_size, C)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, C)
        self.register_buffer("pe", sinusoidal_positional_encoding(cfg.max_len, C), persistent=False)
        self.register_buffer("emb_scale", torch.tensor(math.sqrt(C)), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(
            [EncoderBlock(C, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.norm_first) for _ in range(cfg.n_layers)])
        self.decoder = nn.ModuleList(
            [DecoderBlock(C, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.norm_first) for _ in range(cfg.n_layers)])
        self.enc_norm = nn.LayerNorm(C) if cfg.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(C) if cfg.norm_first else nn.Identity()
        self.generator = nn.Linear(C, cfg.tgt_vocab_size)
        if cfg.tie_weights:
            self.generator.weight = self.tgt_embed.weight
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform linear layers with zero bias; embeddings N(0, 1/d_model) (after the linears: tying)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=self.cfg.d_model ** -0.5)

    def _embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] -> sqrt(d_model) * E[ids] + pe[:L], Tensor[B, L, C]."""
        assert ids.dim() == 2, f"expected token ids [B, L], got {tuple(ids.shape)}"
        L = ids.size(1)
        assert L <= self.pe.size(0), f"sequence of {L} tokens, the positional encoding covers {self.pe.size(0)}"
        return table(ids) * self.emb_scale + self.pe[:L]

    def src_mask(self, src: torch.Tensor) -> torch.Tensor:
        """LongTensor[B, S] -> BoolTensor[B, 1, 1, S], True at real (non-pad) source tokens."""
        return (src != self.cfg.pad_id)[:, None, None, :]

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """LongTensor[B, S] -> memory Tensor[B, S, C]."""
        S = src.size(1)
        x = self.dropout(self._embed(self.src_embed, src))
        mask = self.src_mask(src)
        for block in self.encoder:
            x = block(x, mask)
        memory = self.enc_norm(x)
        assert memory.shape == (*src.shape, self.cfg.d_model)
        return memory

    def decode(self, tgt, memory, src):
        """tgt: LongTensor[B, T] (starts with BOS), memory: Tensor[B, S, C], src: LongTensor[B, S]
        -> logits Tensor[B, T, tgt_vocab_size]: logits[:, t] predicts token t + 1."""
        T = tgt.size(1)
        y = self.dropout(self._embed(self.tgt_embed, tgt))
        tgt_mask = causal_mask(T, device=tgt.device)
        memory_mask = self.src_mask(src)
        for block in self.decoder:
            y = block(y, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.generator(self.dec_norm(y))

    def forward(self, src, tgt):
        """src: LongTensor[B, S], tgt: LongTensor[B, T] -> logits Tensor[B, T, tgt_vocab_size]."""
        return self.decode(tgt, self.encode(src), src)
