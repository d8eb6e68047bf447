"""Building blocks: feature embeddings with item side information, attention, token mixing.

Shapes: B = batch, S = sparse features, L = history length, E = embedding width, K = compressed
tokens, T = mixer tokens, D = token width. Padding positions of a history (item id PADDING_ITEM)
never receive attention, and a history with no valid position yields exact zeros (never NaN), so
new users do not poison a batch.
"""

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from recdistill_dagster.data.schema import DENSE_FEATURES, PADDING_ITEM, SPARSE_FEATURES, FeatureVocab

USER = SPARSE_FEATURES.index("user_id")
ITEM = SPARSE_FEATURES.index("item_id")
CATEGORY = SPARSE_FEATURES.index("category")
CREATOR = SPARSE_FEATURES.index("creator")
TRAFFIC_SOURCE = SPARSE_FEATURES.index("traffic_source")
N_SPARSE = len(SPARSE_FEATURES)
CANDIDATE_IDS = [ITEM, CATEGORY, CREATOR]  # the candidate's item-side ids, as HistoryMatch expects
N_DENSE = len(DENSE_FEATURES)


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Parameters split into embedding tables (every nn.Embedding, sparse lookups) and dense weights."""
    tables = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    embedding = sum(p.numel() for table in tables for p in table.parameters())
    total = sum(p.numel() for p in module.parameters())
    return {"total": total, "embedding": embedding, "dense": total - embedding}


class MLP(nn.Sequential):
    """Linear → GELU (→ Dropout) per hidden width, then an optional output Linear without activation."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] | list[int], out_dim: int | None = None,
                 dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        dim = in_dim
        for width in hidden:
            layers += [nn.Linear(dim, width), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = width
        if out_dim is not None:
            layers.append(nn.Linear(dim, out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim if out_dim is not None else dim


class FeatureEmbedding(nn.Module):
    """One table per sparse feature; history items are enriched with their category and creator.

    `item_category` / `item_creator` (buffers, saved with the weights) map an item id to its side
    features, so rows carry only item ids in `history` and the candidate and the history items share
    one representation: item ⊕ category ⊕ creator (a sum of the three embeddings).
    """

    item_category: torch.Tensor  # (n_items,) buffer: an item id's category id
    item_creator: torch.Tensor  # (n_items,) buffer: an item id's creator id

    def __init__(self, vocab: FeatureVocab, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleList(nn.Embedding(vocab.size_of(name), dim) for name in SPARSE_FEATURES)
        self.register_buffer("item_category", torch.as_tensor(vocab.item_category, dtype=torch.long))
        self.register_buffer("item_creator", torch.as_tensor(vocab.item_creator, dtype=torch.long))
        for feature in range(len(self.tables)):
            nn.init.normal_(self.table(feature).weight, std=0.05)

    def table(self, feature: int) -> nn.Embedding:
        """The embedding table of one sparse feature (index into SPARSE_FEATURES)."""
        return cast(nn.Embedding, self.tables[feature])

    def sparse(self, sparse: torch.Tensor) -> torch.Tensor:
        # sparse (B, S) → (B, S, E)
        return torch.stack([table(sparse[:, i]) for i, table in enumerate(self.tables)], dim=1)

    def item(self, item: torch.Tensor, category: torch.Tensor, creator: torch.Tensor) -> torch.Tensor:
        # any shape (...) → (..., E)
        embedded: torch.Tensor = self.table(ITEM)(item) + self.table(CATEGORY)(category) + self.table(CREATOR)(creator)
        return embedded

    def side_info(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # item ids (...) → their category and creator ids (...), (...)
        return self.item_category[items], self.item_creator[items]

    def candidate(self, sparse: torch.Tensor) -> torch.Tensor:
        # (B, S) → (B, E)
        return self.item(sparse[:, ITEM], sparse[:, CATEGORY], sparse[:, CREATOR])

    def item_table(self) -> torch.Tensor:
        """Every item's enriched embedding at once: (n_items, E).

        For long histories one gather from this table replaces three gathers per position: the
        side features are per item, so composing them over the vocabulary (n_items rows) is far
        cheaper than over B·L history positions, forward and backward.
        """
        table: torch.Tensor = (self.table(ITEM).weight + self.table(CATEGORY)(self.item_category)
                               + self.table(CREATOR)(self.item_creator))
        return table

    def history(self, history: torch.Tensor,
                table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """History item ids (B, L) → embeddings (B, L, E) and validity mask (B, L).

        With `table` (from `item_table()`) the lookup is one gather; without, three small lookups,
        which is cheaper for short histories.
        """
        mask = history != PADDING_ITEM
        if table is not None:
            embedded = table.index_select(0, history.reshape(-1)).reshape(*history.shape, self.dim)
        else:
            embedded = self.item(history, self.item_category[history], self.item_creator[history])
        return embedded, mask


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis ignoring masked positions; all-masked rows give zeros.

    A finite fill (not −inf) keeps the softmax NaN-free in the forward and the backward pass for
    empty histories; multiplying by the mask then zeroes the uniform weights such a row gets.
    """
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: (B, L, E), (B, L) → (B, E); empty histories give zeros."""
    counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
    return (sequence * mask.unsqueeze(-1)).sum(dim=1) / counts


def history_windows(seq_len: int) -> tuple[int, ...]:
    """Recency windows for the match statistics: the last 10 events (a session), 50, the whole window."""
    return tuple(sorted({w for w in (10, 50) if w < seq_len} | {seq_len}))


class HistoryMatch(nn.Module):
    """Target-aware counting over the history (SIM-style "hard search" statistics): (B, 4·W).

    For each recency window w (the newest w events) and for the candidate's item, category and
    creator: the share of the window's valid events that match, plus the window's fill rate. These
    are what a long history is good for (how often did this user engage with this creator?), and a
    softmax-normalised attention can only estimate them indirectly. Parameter-free; ints and
    comparisons only, so it is cheap even for a 256-long history.
    """

    def __init__(self, windows: tuple[int, ...]) -> None:
        super().__init__()
        self.windows = windows
        self.n_features = 4 * len(windows)

    def forward(self, candidate: torch.Tensor, history: torch.Tensor, history_category: torch.Tensor,
                history_creator: torch.Tensor) -> torch.Tensor:
        # candidate (B, 3) [item, category, creator]; history, history_category, history_creator (B, L)
        valid = history != PADDING_ITEM  # (B, L)
        matches = torch.stack(
            [history == candidate[:, :1], history_category == candidate[:, 1:2],
             history_creator == candidate[:, 2:3]], dim=-1
        ) & valid.unsqueeze(-1)  # (B, L, 3)
        features = []
        for window in self.windows:
            n_valid = valid[:, -window:].sum(dim=1, keepdim=True).to(torch.float32)  # (B, 1)
            shares = matches[:, -window:].sum(dim=1).to(torch.float32) / n_valid.clamp(min=1)  # (B, 3)
            features += [shares, n_valid / window]
        return torch.cat(features, dim=1)  # (B, 4·W)


class TargetAttention(nn.Module):
    """The candidate attends over a sequence (scaled dot product): (B, E), (B, L, E), (B, L) → (B, E).

    No value projection: the pooled vector stays in the item embedding space, so downstream
    products such as candidate ⊙ attended keep a direct "how similar" meaning.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, candidate: torch.Tensor, sequence: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = torch.einsum("be,ble->bl", self.query(candidate), self.key(sequence)) * self.scale  # (B, L)
        weights = torch.softmax(scores, dim=-1) if mask is None else masked_softmax(scores, mask)
        return torch.einsum("bl,ble->be", weights, sequence)


class _PooledAttention(torch.autograd.Function):
    """Masked softmax attention of K queries over a sequence, plus M fixed weight rows, fused.

    Forward: weights = masked_softmax(scale · (sequence @ queriesᵀ + score_bias)ᵀ) (B, K, L), then
    all = [weights; extra] (B, K + M, L) and pooled = all @ sequence (B, K + M, E).
    Returns (pooled, all). The hand-written backward writes the sequence gradient with one batched
    matmul, [dscores; all]ᵀ @ [queries; dpooled], instead of autograd's two matmuls plus a sum of
    B·L·E tensors: the long-history path is memory bound, and this saves about half its traffic.
    """

    @staticmethod
    def forward(ctx: Any, queries: torch.Tensor, sequence: torch.Tensor, score_bias: torch.Tensor,
                mask: torch.Tensor, extra: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.baddbmm(score_bias, sequence, queries.transpose(1, 2))  # (B, L, K)
        weights = masked_softmax(scores.transpose(1, 2) * scale, mask.unsqueeze(1))  # (B, K, L)
        all_weights = torch.cat([weights, extra], dim=1)  # (B, K + M, L)
        pooled = all_weights @ sequence  # (B, K + M, E)
        ctx.save_for_backward(queries, sequence, all_weights)
        ctx.scale = scale
        return pooled, all_weights

    @staticmethod
    def backward(ctx: Any, d_pooled: torch.Tensor, d_weights: torch.Tensor | None) -> tuple[Any, ...]:
        queries, sequence, all_weights = ctx.saved_tensors
        k = queries.shape[1]
        d_all = d_pooled @ sequence.transpose(1, 2)  # (B, K + M, L)
        if d_weights is not None:
            d_all = d_all + d_weights
        weights, d_w = all_weights[:, :k], d_all[:, :k]  # (B, K, L)
        # Softmax backward; masked positions have weight 0, so they get no gradient.
        d_scores = weights * (d_w - (d_w * weights).sum(dim=-1, keepdim=True)) * ctx.scale  # (B, K, L)
        d_queries = d_scores @ sequence  # (B, K, E)
        left = torch.cat([d_scores, all_weights], dim=1).transpose(1, 2)  # (B, L, 2K + M)
        d_sequence = left @ torch.cat([queries, d_pooled], dim=1)  # (B, L, E), written once
        return d_queries, d_sequence, d_scores.transpose(1, 2), None, None, None


class SequenceCompressor(nn.Module):
    """Compress a long history into K tokens (LONGER-style), queries conditioned on the candidate.

    (B, E) candidate, (B, L, E) history, (B, L) mask, optional (L, E) position embeddings → (B, K', E)
    with K' = K, or K + 1 when `mean_token` adds the values' mean over valid positions (the
    "how much of the history is like this" share that softmax pooling loses).

    Semantically this is cross-attention with keys key(x_l + p_l) and values value(x_l + p_l). It is
    computed without projecting the B·L positions: q·key(x) = (q·W_k)·x + const (the constant drops
    out of the softmax), and Σ_l w_l·value(x_l) = value(Σ_l w_l·x_l) because the weights sum to one.
    The B·L-sized work left is the fused attention above, which keeps a 256-long history affordable
    on a CPU. An empty history gives zero tokens.
    """

    def __init__(self, dim: int, n_tokens: int, mean_token: bool = False) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.mean_token = mean_token
        self.queries = nn.Parameter(torch.randn(n_tokens, dim) * 0.05)
        self.condition = nn.Linear(dim, dim)
        # No key bias: q·b is the same for every position, so softmax would ignore it.
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, candidate: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor,
                position: torch.Tensor | None = None) -> torch.Tensor:
        b, length, _ = sequence.shape
        queries = self.queries.unsqueeze(0) + self.condition(candidate).unsqueeze(1)  # (B, K, E)
        q_key = queries @ self.key.weight  # (B, K, E): W_k absorbed into the query
        if position is not None:
            score_bias = position @ q_key.transpose(1, 2)  # (L, E) @ (B, E, K) → (B, L, K)
        else:
            score_bias = sequence.new_zeros(b, length, self.n_tokens)
        if self.mean_token:
            uniform = mask.to(sequence.dtype) / mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, L)
            extra = uniform.unsqueeze(1)  # (B, 1, L)
        else:
            extra = sequence.new_zeros(b, 0, length)
        pooled: torch.Tensor
        weights: torch.Tensor
        # autograd.Function.apply is untyped in torch: the two outputs are forward's.
        pooled, weights = _PooledAttention.apply(  # type: ignore[no-untyped-call]
            q_key, sequence, score_bias, mask, extra, self.scale)
        if position is not None:
            pooled = pooled + weights @ position  # (B, K', L) @ (L, E)
        # Σ w = 1 except for empty histories, whose output is zero rather than value's bias.
        valid = mask.any(dim=1).to(sequence.dtype)[:, None, None]  # (B, 1, 1)
        compressed: torch.Tensor = self.value(pooled) * valid
        return compressed


class PerTokenFFN(nn.Module):
    """A separate two-layer feed-forward network for every token: (B, T, D) → (B, T, D)."""

    def __init__(self, n_tokens: int, width: int, mult: int) -> None:
        super().__init__()
        hidden = width * mult
        self.w_in = nn.Parameter(torch.randn(n_tokens, width, hidden) / math.sqrt(width))
        self.b_in = nn.Parameter(torch.zeros(n_tokens, hidden))
        self.w_out = nn.Parameter(torch.randn(n_tokens, hidden, width) / math.sqrt(hidden))
        self.b_out = nn.Parameter(torch.zeros(n_tokens, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Token-major (T, B, D) so each token's weights apply as one batched matmul.
        x = tokens.transpose(0, 1)  # (T, B, D)
        hidden = F.gelu(torch.baddbmm(self.b_in.unsqueeze(1), x, self.w_in))  # (T, B, H)
        out = torch.baddbmm(self.b_out.unsqueeze(1), hidden, self.w_out)  # (T, B, D)
        return out.transpose(0, 1)


class ChunkTokenizer(nn.Module):
    """RankMixer tokenization: (B, F) concatenated features → (B, T, D) tokens.

    The feature vector is zero-padded to T equal chunks and each chunk gets its own projection to
    width D, so tokenizing costs F·D weights rather than a dense F·T·D layer; the mixer blocks, not
    the tokenizer, move information across tokens.
    """

    def __init__(self, in_dim: int, n_tokens: int, width: int) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.chunk = -(-in_dim // n_tokens)  # ceil
        self.pad = self.chunk * n_tokens - in_dim
        self.weight = nn.Parameter(torch.randn(n_tokens, self.chunk, width) / math.sqrt(self.chunk))
        self.bias = nn.Parameter(torch.zeros(n_tokens, width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b = features.shape[0]
        chunks = F.pad(features, (0, self.pad)).reshape(b, self.n_tokens, self.chunk)  # (B, T, C)
        chunks = chunks.transpose(0, 1)  # (T, B, C)
        return torch.baddbmm(self.bias.unsqueeze(1), chunks, self.weight).transpose(0, 1)  # (B, T, D)


class TokenMixerBlock(nn.Module):
    """RankMixer-style block: parameter-free token mixing, then per-token FFNs; residual + LayerNorm.

    Mixing: each token (width D) is split into T chunks of D/T; output token t is the concatenation
    of chunk t of every input token, so information crosses tokens without attention's cost.
    """

    def __init__(self, n_tokens: int, width: int, ffn_mult: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % n_tokens:
            raise ValueError(f"width {width} must be divisible by the number of tokens {n_tokens}")
        self.n_tokens = n_tokens
        self.norm_mix = nn.LayerNorm(width)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = PerTokenFFN(n_tokens, width, ffn_mult)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def mix(tokens: torch.Tensor) -> torch.Tensor:
        # (B, T, D) → (B, T, T, D/T) [token, chunk] → transpose → [chunk, token] → (B, T, D)
        b, t, d = tokens.shape
        return tokens.reshape(b, t, t, d // t).transpose(1, 2).reshape(b, t, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.norm_mix(tokens + self.mix(tokens))
        mixed: torch.Tensor = self.norm_ffn(tokens + self.dropout(self.ffn(tokens)))
        return mixed
