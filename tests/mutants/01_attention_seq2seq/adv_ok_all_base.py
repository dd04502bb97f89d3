# mutant: my straightforward solution of every cell
# fails: none
# %% scores
def dot_score(query, keys):
    """q . k_j for every key: query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return (keys @ query.unsqueeze(-1)).squeeze(-1)


def scaled_dot_score(query, keys):
    """q . k_j / sqrt(d): query Tensor[B, d], keys Tensor[B, S, d] -> scores Tensor[B, S]."""
    return dot_score(query, keys) / math.sqrt(query.size(-1))


def general_score(query, keys, W):
    """q^T W k_j (Luong's "general", bilinear)."""
    return (keys @ (query @ W).unsqueeze(-1)).squeeze(-1)


def additive_score(query, keys, W, U, v):
    """v^T tanh(W q + U k_j) (Bahdanau's, additive)."""
    hidden = torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T)
    return hidden @ v


# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, float("-inf"))
    any_allowed = mask.any(dim=-1, keepdim=True)
    filled = filled.masked_fill(~any_allowed, 0.0)
    weights = torch.softmax(filled, dim=-1)
    return weights.masked_fill(~mask, 0.0)


# %% attention
class AdditiveAttention(nn.Module):
    """Bahdanau's attention: weights a_j = masked_softmax(v^T tanh(W s + U h_j)), context c = sum_j a_j h_j."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query, keys, mask):
        scores = additive_score(query, keys, self.W.weight, self.U.weight, self.v.weight[0])
        weights = masked_softmax(scores, mask)
        context = (weights.unsqueeze(1) @ keys).squeeze(1)
        return context, weights


# %% encoder
class Encoder(nn.Module):
    """Bidirectional GRU encoder: token ids -> annotations h_j = [fwd_j ; bwd_j] and the decoder's s_0."""

    def __init__(self, vocab_size, emb_dim, hid_dim, dec_hid_dim, dropout=0.0, pad_id=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(emb_dim, hid_dim, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hid_dim, dec_hid_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, src_len):
        S = src.size(1)
        embedded = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(embedded, src_len.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=S)
        hidden = torch.tanh(self.fc(torch.cat([h_n[0], h_n[1]], dim=-1)))
        return outputs, hidden


# %% decoder
class AttentionDecoder(nn.Module):
    """One step of Bahdanau's decoder: attend with s_{i-1}, s_i = GRU([e_i ; c_i], s_{i-1}), predict y_i."""

    def __init__(self, vocab_size, emb_dim, enc_dim, dec_hid_dim, attn_dim, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.attention = AdditiveAttention(dec_hid_dim, enc_dim, attn_dim)
        self.rnn = nn.GRUCell(emb_dim + enc_dim, dec_hid_dim)
        self.out = nn.Linear(dec_hid_dim + enc_dim + emb_dim, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y_prev, s_prev, enc_out, src_mask):
        e = self.dropout(self.embedding(y_prev))
        context, weights = self.attention(s_prev, enc_out, src_mask)
        s = self.rnn(torch.cat([e, context], dim=-1), s_prev)
        logits = self.out(torch.cat([s, context, e], dim=-1))
        return logits, s, weights


# %% fixed_context
def fixed_context(enc_out, src_mask):
    """The baseline's thought vector."""
    B, H = enc_out.size(0), enc_out.size(-1) // 2
    last = src_mask.sum(-1) - 1
    fwd = enc_out[torch.arange(B, device=enc_out.device), last, :H]
    bwd = enc_out[:, 0, H:]
    return torch.cat([fwd, bwd], dim=-1)


# %% seq2seq
class Seq2Seq(nn.Module):
    """Encoder + one-step decoder, trained with teacher forcing."""

    def __init__(self, encoder, decoder, pad_id=0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.pad_id = pad_id

    def encode(self, src, src_len):
        """-> enc_out Tensor[B, S, E], s_0 Tensor[B, D], src_mask BoolTensor[B, S] (True at real tokens)."""
        enc_out, s0 = self.encoder(src, src_len)
        return enc_out, s0, src != self.pad_id

    def forward(self, src, src_len, tgt):
        enc_out, s, mask = self.encode(src, src_len)
        all_logits, all_weights = [], []
        for t in range(tgt.size(1) - 1):
            logits, s, weights = self.decoder(tgt[:, t], s, enc_out, mask)
            all_logits.append(logits)
            all_weights.append(weights)
        logits = torch.stack(all_logits, dim=1)
        weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
        return logits, weights


# %% greedy
@torch.no_grad()
def greedy_decode(model, src, src_len, max_len, bos, eos):
    """Batched greedy decoding with model.encode and model.decoder, one step at a time."""
    was_training = model.training
    model.eval()
    try:
        enc_out, s, mask = model.encode(src, src_len)
        B = src.size(0)
        ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)
        all_weights = []
        y = ys[:, 0]
        for _ in range(max_len):
            logits, s, w = model.decoder(y, s, enc_out, mask)
            y = logits.argmax(-1)
            y = y.masked_fill(finished, model.pad_id)
            ys = torch.cat([ys, y[:, None]], dim=1)
            all_weights.append(w)
            finished = finished | (y == eos)
            if bool(finished.all()):
                break
        weights = None if not all_weights or all_weights[0] is None else torch.stack(all_weights, dim=1)
    finally:
        model.train(was_training)
    return ys, weights


# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    """Batched beam search with length normalisation."""
    was_training = model.training
    model.eval()
    try:
        K = beam_size
        B = src.size(0)
        dev = src.device
        enc_out, s, mask = model.encode(src, src_len)
        enc_out = enc_out.repeat_interleave(K, dim=0)
        s = s.repeat_interleave(K, dim=0)
        mask = mask.repeat_interleave(K, dim=0)
        scores = torch.full((B, K), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # the K copies of [BOS]: only one is extended
        tokens = torch.full((B * K, 1), bos, dtype=torch.long, device=dev)
        finished = [[] for _ in range(B)]
        for step in range(1, max_len + 1):
            logits, s, _ = model.decoder(tokens[:, -1], s, enc_out, mask)
            logp = torch.log_softmax(logits.float(), dim=-1)
            V = logp.size(-1)
            cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * V)
            top, idx = cand.topk(K, dim=-1)
            parent, tok = idx // V, idx % V
            rows = (torch.arange(B, device=dev)[:, None] * K + parent).reshape(-1)
            tokens = torch.cat([tokens[rows], tok.reshape(-1, 1)], dim=1)
            s = s[rows]
            is_eos = tok == eos
            for b, k in is_eos.nonzero().tolist():
                if top[b, k] > float("-inf"):
                    finished[b].append((top[b, k].item() / step ** alpha, tokens[b * K + k].tolist()))
            scores = top.masked_fill(is_eos, float("-inf"))
            if bool(torch.isinf(scores).all()):
                break
        for b in range(B):  # still live at max_len: finished with n = max_len
            for k in range(K):
                if scores[b, k] > float("-inf"):
                    finished[b].append((scores[b, k].item() / max_len ** alpha, tokens[b * K + k].tolist()))
        return [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
    finally:
        model.train(was_training)
