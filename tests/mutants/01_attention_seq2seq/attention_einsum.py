# mutant: correct: einsum context
# fails: none
# %% attention
class AdditiveAttention(nn.Module):
    """Bahdanau's attention: weights a_j = masked_softmax(v^T tanh(W s + U h_j)), context c = sum_j a_j h_j.

    Attributes:
        W: nn.Linear(query_dim, attn_dim, bias=False), W_a, applied to the decoder state.
        U: nn.Linear(key_dim, attn_dim, bias=False), U_a, applied to the encoder states.
        v: nn.Linear(attn_dim, 1, bias=False), v_a^T.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query, keys, mask):
        """
        Args:
            query: Tensor[B, D], the decoder state s_{i-1}.
            keys: Tensor[B, S, E], the encoder states h_1, ..., h_S.
            mask: BoolTensor[B, S], True at real source tokens.

        Returns:
            context: Tensor[B, E], c_i = sum_j a_j h_j.
            weights: Tensor[B, S], a_j (0 at padding).
        """
        scores = additive_score(query, keys, self.W.weight, self.U.weight, self.v.weight[0])  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S)
        context = torch.einsum('bs,bse->be', weights, keys)  # (B, 1, S) @ (B, S, E) -> (B, E)
        return context, weights
