"""Layers: masking without NaN, the fused sequence compressor against a naive reference, token mixing."""

import math

import torch

from models.layers import (
    ChunkTokenizer,
    HistoryMatch,
    SequenceCompressor,
    TargetAttention,
    TokenMixerBlock,
    _PooledAttention,
    history_windows,
    masked_softmax,
)


def test_masked_softmax_ignores_padding_and_zeroes_empty_rows() -> None:
    scores = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    weights = masked_softmax(scores, mask)
    assert torch.allclose(weights[0].sum(), torch.tensor(1.0)) and (weights[0, [2, 4]] == 0).all()
    assert torch.equal(weights[1], torch.zeros(5))
    (weights * torch.randn(3, 5)).sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.equal(scores.grad[1], torch.zeros(5))


def _naive_compressor(module: SequenceCompressor, candidate: torch.Tensor, sequence: torch.Tensor,
                      mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Textbook cross-attention: project every position, attend, then append the mean token."""
    x = sequence + position  # (B, L, E)
    keys, values = module.key(x), module.value(x)
    queries = module.queries.unsqueeze(0) + module.condition(candidate).unsqueeze(1)
    scores = queries @ keys.transpose(1, 2) / math.sqrt(sequence.shape[-1])
    weights = masked_softmax(scores, mask.unsqueeze(1))
    tokens = weights @ values
    mean = (values * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    valid = mask.any(1)[:, None, None].to(x.dtype)
    return torch.cat([tokens, mean.unsqueeze(1)], dim=1) * valid


def test_sequence_compressor_equals_naive_attention_forward_and_backward() -> None:
    torch.manual_seed(0)
    b, length, e, k = 4, 7, 6, 3
    module = SequenceCompressor(e, k, mean_token=True).double()
    candidate = torch.randn(b, e, dtype=torch.float64)
    sequence = torch.randn(b, length, e, dtype=torch.float64, requires_grad=True)
    position = torch.randn(length, e, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(b, length) > 0.3
    mask[0] = True
    mask[1] = False  # an empty history
    got = module(candidate, sequence, mask, position)
    want = _naive_compressor(module, candidate, sequence, mask, position)
    assert got.shape == (b, k + 1, e)
    assert torch.allclose(got, want, atol=1e-10)
    assert torch.equal(got[1], torch.zeros(k + 1, e))
    upstream = torch.randn_like(got)
    grads_got = torch.autograd.grad((got * upstream).sum(), [sequence, position, *module.parameters()])
    grads_want = torch.autograd.grad((want * upstream).sum(), [sequence, position, *module.parameters()])
    for g, w in zip(grads_got, grads_want, strict=True):
        assert torch.allclose(g, w, atol=1e-9)


def test_fused_attention_backward_passes_gradcheck() -> None:
    torch.manual_seed(1)
    queries = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    sequence = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    extra = (mask.double() / mask.sum(1, keepdim=True).clamp(min=1)).unsqueeze(1)

    def fn(q: torch.Tensor, x: torch.Tensor, bias_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _PooledAttention.apply(q, x, bias_, mask, extra, 0.7)

    assert torch.autograd.gradcheck(fn, (queries, sequence, bias))


def test_target_attention_with_empty_history_is_zero() -> None:
    attention = TargetAttention(4)
    candidate = torch.randn(2, 4, requires_grad=True)
    sequence = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = attention(candidate, sequence, mask)
    assert torch.equal(out[1], torch.zeros(4))
    out.sum().backward()
    assert torch.isfinite(candidate.grad).all()


def test_token_mixing_is_a_parameter_free_transpose() -> None:
    t, d = 4, 8
    tokens = torch.arange(2 * t * d, dtype=torch.float32).reshape(2, t, d)
    mixed = TokenMixerBlock.mix(tokens)
    chunk = d // t
    for out_token in range(t):
        piece = slice(out_token * chunk, (out_token + 1) * chunk)
        expected = torch.cat([tokens[:, src, piece] for src in range(t)], dim=1)
        assert torch.equal(mixed[:, out_token], expected)
    assert torch.equal(TokenMixerBlock.mix(mixed), tokens)  # T chunks of T tokens: an involution
    block = TokenMixerBlock(t, d, ffn_mult=2)
    assert block(tokens).shape == (2, t, d)
    assert sum(p.numel() for p in block.ffn.parameters()) == t * (d * 2 * d * 2 + 2 * d + d)


def test_chunk_tokenizer_gives_each_token_its_own_chunk() -> None:
    tokenizer = ChunkTokenizer(in_dim=10, n_tokens=4, width=6)  # chunks of 3, two padded zeros
    features = torch.randn(5, 10)
    tokens = tokenizer(features)
    assert tokens.shape == (5, 4, 6)
    padded = torch.nn.functional.pad(features, (0, 2)).reshape(5, 4, 3)
    for t in range(4):
        assert torch.allclose(tokens[:, t], padded[:, t] @ tokenizer.weight[t] + tokenizer.bias[t], atol=1e-6)


def test_history_match_counts_shares_per_recency_window() -> None:
    match = HistoryMatch(windows=(2, 5))
    candidate = torch.tensor([[7, 1, 3], [9, 2, 4]])  # item, category, creator
    history = torch.tensor([[0, 7, 5, 7, 6], [0, 0, 0, 0, 0]])
    category = torch.tensor([[1, 1, 1, 1, 2], [0, 0, 0, 0, 0]])  # padding has category 0...
    creator = torch.tensor([[3, 3, 8, 3, 3], [4, 4, 4, 4, 4]])  # ...and masked matches never count
    out = match(candidate, history, category, creator)
    assert out.shape == (2, 8) and match.n_features == 8
    # window 2 = items [7, 6]: item 1/2, category 1/2, creator 2/2, fill 2/2
    assert out[0, :4].tolist() == [0.5, 0.5, 1.0, 1.0]
    # window 5 = 4 valid items [7, 5, 7, 6]: item 2/4, category 3/4, creator 3/4, fill 4/5
    assert torch.allclose(out[0, 4:], torch.tensor([0.5, 0.75, 0.75, 0.8]))
    assert torch.equal(out[1], torch.zeros(8))  # empty history
    assert history_windows(256) == (10, 50, 256) and history_windows(20) == (10, 20)
    assert history_windows(8) == (8,)
