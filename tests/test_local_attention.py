"""course.local_attention (the answers of assignment 03) against independent computations, and
course.device's memory measurement the notebook and the checks rely on: a bug here would blame
students for the course's own mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import course.local_attention as ref
from course.device import TensorMemory, measure
from course.testing import check_close


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _inputs(B=2, N=2, D=4, H=5, W=6, K=3, dtype=torch.float64, grad=False):
    q, k, v = (torch.randn(B, N, D, H, W, dtype=dtype, requires_grad=grad) for _ in range(3))
    rel_h, rel_w = (torch.randn(N, K, D // 2, dtype=dtype, requires_grad=grad) for _ in range(2))
    return q, k, v, rel_h, rel_w


def _brute_force(q, k, v, rel_h, rel_w, K):
    """Attention of every pixel over the whole image with the non-neighbours masked: a formulation with
    no padding, no unfolding and no loops over offsets."""
    B, N, D, H, W = q.shape
    P = K // 2
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    dy = ii.flatten()[None, :] - ii.flatten()[:, None]  # (HW query, HW key): a - i
    dx = jj.flatten()[None, :] - jj.flatten()[:, None]
    near = (dy.abs() <= P) & (dx.abs() <= P)
    qf, kf, vf = (t.flatten(3) for t in (q, k, v))  # (B, N, D, HW)
    content = torch.einsum("bndi,bndj->bnij", qf, kf)
    logits = content.clone()
    for n in range(N):
        r_h = rel_h[n][(dy + P).clamp(0, K - 1)]  # (HW, HW, D/2)
        r_w = rel_w[n][(dx + P).clamp(0, K - 1)]
        logits[:, n] += torch.einsum("bdi,ijd->bij", qf[:, n, :D // 2], r_h) + torch.einsum(
            "bdi,ijd->bij", qf[:, n, D // 2:], r_w)
    a = logits.masked_fill(~near, float("-inf")).softmax(-1)
    return torch.einsum("bnij,bndj->bndi", a, vf).view(B, N, -1, H, W)


@pytest.mark.parametrize("shape", [(2, 2, 4, 5, 6, 3), (1, 1, 2, 3, 2, 5), (1, 3, 6, 4, 4, 1), (2, 1, 4, 7, 3, 7)])
def test_the_three_versions_agree_with_attention_over_the_whole_image(shape):
    B, N, D, H, W, K = shape
    args = _inputs(B, N, D, H, W, K)
    expected = _brute_force(*args, K)
    out, weights = ref.local_attention_naive(*args, K)
    check_close(out, expected, atol=1e-10)
    out2, weights2 = ref.local_attention(*args, K)
    check_close(out2, expected, atol=1e-10)
    check_close(weights2, weights, atol=1e-12)
    for chunk in (1, 2, 3, H + 1):
        check_close(ref.local_attention_chunked(*args, K, chunk), expected, atol=1e-10)


def test_weights_are_zero_outside_the_image_and_sum_to_one():
    _, weights = ref.local_attention(*_inputs(H=4, W=3, K=5), 5)  # (B, N, H, W, K, K)
    P = 2
    for i in range(4):
        for j in range(3):
            for dy in range(-P, P + 1):
                for dx in range(-P, P + 1):
                    w = weights[:, :, i, j, P + dy, P + dx]
                    if not (0 <= i + dy < 4 and 0 <= j + dx < 3):
                        assert w.eq(0).all(), (i, j, dy, dx)
    check_close(weights.sum((-1, -2)), torch.ones(weights.shape[:4], dtype=weights.dtype), atol=1e-12)


def test_kernel_one_is_the_values_and_identical_keys_average_the_neighbours():
    q, k, v, rel_h, rel_w = _inputs(K=1)
    out, _ = ref.local_attention(q, k, v, rel_h, rel_w, 1)
    check_close(out, v, atol=1e-12)
    q, k, v, rel_h, rel_w = _inputs(H=3, W=3, K=3)
    out, _ = ref.local_attention(q, torch.zeros_like(k), v, torch.zeros_like(rel_h), torch.zeros_like(rel_w), 3)
    check_close(out[..., 0, 0], v[..., :2, :2].mean((-1, -2)), atol=1e-12)  # corner: 4 neighbours
    check_close(out[..., 1, 1], v.mean((-1, -2)), atol=1e-12)  # centre: all 9


def test_chunked_gradients_match_and_training_memory_drops():
    args = _inputs(grad=True, H=9, W=7, K=5)
    g = torch.autograd.grad(ref.local_attention(*args, 5)[0].sum(), args)
    g2 = torch.autograd.grad(ref.local_attention_chunked(*args, 5, 2).sum(), args)
    for a, b in zip(g, g2):
        check_close(b, a, atol=1e-10)
    x = torch.randn(2, 32, 32, 32)
    layer = ref.LocalAttention2d(32, 32, 7, 4)
    whole = measure(layer, x, backward=True, repeat=1)
    layer.chunk = 4
    chunked = measure(layer, x, backward=True, repeat=1)
    unfolded = 2 * 32 * 7 * 7 * 32 * 32 * 4 / 2**20  # the whole unfolded keys, MiB
    assert whole["largest_mb"] == pytest.approx(unfolded)
    assert chunked["largest_mb"] < 0.35 * unfolded and chunked["peak_mb"] < 0.5 * whole["peak_mb"], (whole, chunked)


def test_layer_is_equivariant_to_translation_away_from_the_borders():
    layer = ref.LocalAttention2d(4, 8, kernel_size=3, heads=2).double()
    x = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    y = layer(x)
    ys = layer(torch.roll(x, (2, 1), (2, 3)))
    check_close(ys[..., 4:7, 3:7], y[..., 2:5, 2:6], atol=1e-10)
    y1, w = layer(x, return_weights=True)
    check_close(y1, y, atol=1e-12)
    assert w.shape == (1, 2, 9, 9, 3, 3)
    k1 = ref.LocalAttention2d(4, 8, kernel_size=1, heads=2).double()
    check_close(k1(x), k1.v_proj(x), atol=1e-12)


def test_non_local_block_starts_as_identity_and_attends_over_all_pixels():
    block = ref.NonLocalBlock(6).double()
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    check_close(block(x), x, atol=0)
    nn.init.ones_(block.bn.weight)
    block.eval()
    t, p, g = (m(x).flatten(2) for m in (block.theta, block.phi, block.g))
    y = torch.stack([F.softmax(t[b].T @ p[b], -1) @ g[b].T for b in range(2)]).transpose(1, 2).reshape(2, 3, 3, 5)
    check_close(block(x), x + block.bn(block.W_z(y)), atol=1e-10)


def test_resnets_shapes_and_structure():
    conv = ref.ResNet((8, 16, 32), (1, 1, 1), mixer="conv")
    attn = ref.ResNet((8, 16, 32), (1, 1, 1), mixer="attention", kernel_size=3, heads=2, non_local=1)
    x = torch.randn(2, 3, 16, 16)
    assert conv(x).shape == attn(x).shape == (2, 10)
    kernels = [m.kernel_size for m in attn.modules() if isinstance(m, nn.Conv2d)]
    assert kernels.count((3, 3)) == 1  # only the stem
    assert sum(isinstance(m, ref.LocalAttention2d) for m in attn.modules()) == 6
    assert sum(isinstance(m, ref.NonLocalBlock) for m in attn.modules()) == 1
    with pytest.raises(ValueError, match="mixer"):
        ref.ResBlock(4, 4, mixer="pool")


def test_bad_arguments_are_named():
    q, k, v, rel_h, rel_w = _inputs()
    with pytest.raises(ValueError, match="odd"):
        ref.local_attention(q, k, v, rel_h, rel_w, 2)
    with pytest.raises(ValueError, match="rel_h"):
        ref.local_attention(q, k, v, rel_h[:, :1], rel_w, 3)
    with pytest.raises(ValueError, match="even"):
        ref.LocalAttention2d(4, 6, heads=2)


def test_tensor_memory_counts_what_ops_create_not_the_inputs():
    x = torch.randn(256, 256)  # 256 KiB, made before: not counted
    with TensorMemory() as mem:
        y = x * 2  # 256 KiB
        z = y.view(-1)  # a view: not counted again
        y.add_(1)  # in place: not counted
        w = x[:10]  # a view of an input: not counted
        del y, z
        u = torch.ones(128, 256)  # 128 KiB, after y was freed
    assert mem.peak == 256 * 256 * 4 and mem.largest == 256 * 256 * 4 and mem.current == 128 * 256 * 4
    del w, u
    r = measure(torch.matmul, x, x, repeat=1)
    assert r["ms"] > 0 and r["peak_mb"] == r["largest_mb"] == 0.25


def test_measure_best_takes_the_fastest_run_and_the_default_the_median():
    import time as _time

    from course.device import measure

    def paced(delays):
        calls = iter(delays)

        def fn(x):
            _time.sleep(next(calls, 0.0))
            return x * 2
        return fn

    x = torch.ones(4)
    slow_fast_slow = [0.0, 0.04, 0.001, 0.04]  # warm-up, then three timed runs
    assert measure(paced(slow_fast_slow), x, repeat=3, best=True)["ms"] < 20
    assert measure(paced(slow_fast_slow), x, repeat=3)["ms"] >= 35
