# mutant: attention with the Linear modules called directly, einsum context
# fails: none
# %% attention
class AdditiveAttention(nn.Module):
    """Bahdanau's attention: weights a_j = masked_softmax(v^T tanh(W s + U h_j)), context c = sum_j a_j h_j."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query, keys, mask):
        scores = self.v(torch.tanh(self.W(query)[:, None, :] + self.U(keys))).squeeze(-1)
        weights = masked_softmax(scores, mask)
        context = torch.einsum("bs,bse->be", weights, keys)
        return context, weights
