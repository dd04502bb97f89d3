# mutant: context squeezed with squeeze(): the batch dim disappears when B = 1
# fails: grade_attention
# hint: shape|B = 1|batch|squeeze
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
        context = (weights.unsqueeze(1) @ keys).squeeze()
        return context, weights
