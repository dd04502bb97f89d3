"""course.vit (the answers of assignment 04 and the adapter to torchvision's names) against torchvision's
VisionTransformer and independent computations: a bug here would blame students for the course's own mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.vision_transformer import EncoderBlock as TorchvisionBlock

import course.vit as ref
from course.testing import check_close


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("C,H,W,p", [(3, 8, 12, 4), (1, 6, 6, 1), (2, 4, 8, 4), (3, 10, 15, 5)])
def test_patchify_cuts_patches_in_raster_order_flattened_like_a_conv_kernel(C, H, W, p):
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    patches = ref.patchify(x, p)
    gw = W // p
    assert patches.shape == (2, (H // p) * gw, C * p * p)
    for n in range(patches.shape[1]):
        r, c = divmod(n, gw)
        assert torch.equal(patches[:, n], x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(2, -1))
    # F.unfold (im2col) flattens the same way, with the patches as its columns
    assert torch.equal(patches, F.unfold(x, p, stride=p).transpose(1, 2))
    with pytest.raises(ValueError, match="multiple"):
        ref.patchify(torch.randn(1, C, H + 1, W), p + (p == 1))


def test_the_two_patch_embeddings_are_one_map():
    conv, linear = ref.ConvPatchEmbedding(3, 8, 4), ref.LinearPatchEmbedding(3, 8, 4)
    with torch.no_grad():
        linear.proj.weight.copy_(conv.proj.weight.reshape(8, -1))
        linear.proj.bias.copy_(conv.proj.bias)
    x = torch.randn(2, 3, 8, 12)
    check_close(linear(x), conv(x), atol=1e-5)
    # torchvision's _process_input: conv, reshape (n, D, N), permute
    check_close(conv(x), conv.proj(x).reshape(2, 8, 6).permute(0, 2, 1), atol=0)


@pytest.mark.parametrize("dim,heads,mlp,T", [(16, 4, 32, 5), (12, 1, 7, 1), (24, 3, 48, 9)])
def test_the_block_is_torchvisions_with_the_same_weights(dim, heads, mlp, T):
    block, theirs = ref.ViTBlock(dim, heads, mlp).eval(), TorchvisionBlock(heads, dim, mlp, 0.0, 0.0).eval()
    ref.load_torchvision_weights(block, theirs)
    x = torch.randn(3, T, dim)
    check_close(block(x), theirs(x), atol=1e-5)
    block.train(), theirs.train()  # dropout 0: training mode computes the same
    check_close(block(x), theirs(x), atol=1e-5)
    block.keep_attention = True
    block(x)
    assert block.attention.shape == (3, heads, T, T)
    check_close(block.attention.sum(-1), torch.ones(3, heads, T), atol=1e-5)


@pytest.mark.parametrize("size,patch,depth,heads,dim,classes", [(32, 4, 2, 3, 48, 7), (16, 8, 1, 2, 16, 10),
                                                               (12, 2, 3, 4, 32, 3)])
@pytest.mark.parametrize("embedding", ["conv", "linear"])
def test_the_vit_is_torchvisions_with_the_same_weights(size, patch, depth, heads, dim, classes, embedding):
    theirs = VisionTransformer(size, patch, depth, heads, dim, 2 * dim, num_classes=classes).eval()
    nn.init.normal_(theirs.class_token)  # torchvision starts it at zero: make its place in the sequence matter
    nn.init.normal_(theirs.heads.head.weight)
    model = ref.ViT(size, patch, 3, classes, dim, depth, heads, 2 * dim, embedding=embedding).eval()
    ref.load_torchvision_weights(model, theirs)
    x = torch.randn(3, 3, size, size)
    check_close(model(x), theirs(x), atol=1e-4)


def test_mean_pooling_has_no_class_token_and_reads_the_mean():
    model = ref.ViT(16, 4, 3, 5, 16, 1, 2, 32, pool="mean").eval()
    assert model.cls_token is None and model.pos_embed.shape == (1, 16, 16)
    x = torch.randn(2, 3, 16, 16)
    tokens = model.patch_embed(x) + model.pos_embed
    for block in model.blocks:
        tokens = block(tokens)
    check_close(model(x), model.head(model.norm(tokens).mean(1)), atol=1e-6)


def test_the_adapter_names_what_does_not_fit():
    theirs = VisionTransformer(16, 4, 2, 2, 16, 32, num_classes=10)
    with pytest.raises(ValueError, match="missing"):
        ref.load_torchvision_weights(ref.ViT(16, 4, 3, 10, 16, 1, 2, 32), theirs)  # one block short
    with pytest.raises(ValueError, match="shape"):
        ref.load_torchvision_weights(ref.ViT(16, 4, 3, 10, 16, 2, 2, 64), theirs)  # another MLP width


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_soft_cross_entropy_is_torchs(smoothing):
    logits, y = torch.randn(6, 7, dtype=torch.float64), torch.randint(0, 7, (6,))
    probs = torch.rand(6, 7, dtype=torch.float64).softmax(-1)
    check_close(ref.soft_cross_entropy(logits, y, smoothing), F.cross_entropy(logits, y, label_smoothing=smoothing))
    check_close(ref.soft_cross_entropy(logits, probs, smoothing),
                F.cross_entropy(logits, probs, label_smoothing=smoothing))
    assert torch.isfinite(ref.soft_cross_entropy(1e4 * logits.float(), y, smoothing))


def test_rollout_is_the_product_of_the_residual_averaged_attention_last_layer_first():
    attentions = [torch.rand(2, 3, 4, 4, dtype=torch.float64).softmax(-1) for _ in range(3)]
    eye = torch.eye(4, dtype=torch.float64)
    a1, a2, a3 = ((0.5 * a.mean(1) + 0.5 * eye) for a in attentions)
    check_close(ref.attention_rollout(attentions), a3 @ a2 @ a1)
    check_close(ref.attention_rollout(attentions[:1], residual=False), attentions[0].mean(1))
    check_close(ref.attention_rollout(attentions).sum(-1), torch.ones(2, 4, dtype=torch.float64))
    # a token that attends only to itself in every layer keeps all of its rollout on itself
    one_hot = [torch.eye(4, dtype=torch.float64).expand(2, 3, 4, 4) for _ in range(2)]
    check_close(ref.attention_rollout(one_hot), eye.expand(2, 4, 4))


def test_position_similarity_is_cosine_between_grid_cells():
    pos = torch.randn(1, 1 + 3 * 2, 5)
    sim = ref.position_similarity(pos, (3, 2))
    u = F.normalize(pos[0, 1:], dim=-1)
    for r in range(3):
        for c in range(2):
            for r2 in range(3):
                for c2 in range(2):
                    check_close(sim[r, c, r2, c2], u[r * 2 + c] @ u[r2 * 2 + c2], atol=1e-6)
    check_close(ref.position_similarity(pos[0, 1:], (3, 2)), sim, atol=0)
    with pytest.raises(ValueError, match="grid"):
        ref.position_similarity(pos, (2, 2))
