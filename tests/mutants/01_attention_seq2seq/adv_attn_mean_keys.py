# mutant: context = the plain mean of the real keys (weights ignored)
# fails: grade_attention
# hint: weight|context|sum_j
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
        context = (keys * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return context, weights
