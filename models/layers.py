"""Building blocks: feature embeddings with item side information, attention, token mixing."""

import math

import torch
from torch import nn

from recdistill_dagster.data.schema import DENSE_FEATURES, PADDING_ITEM, SPARSE_FEATURES, FeatureVocab

USER = SPARSE_FEATURES.index("user_id")
ITEM = SPARSE_FEATURES.index("item_id")
CATEGORY = SPARSE_FEATURES.index("category")
CREATOR = SPARSE_FEATURES.index("creator")
TRAFFIC_SOURCE = SPARSE_FEATURES.index("traffic_source")
N_SPARSE = len(SPARSE_FEATURES)
N_DENSE = len(DENSE_FEATURES)


class MLP(nn.Sequential):
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


class FeatureEmbedding(nn.Module):
    """One table per sparse feature; history items are enriched with their category and creator.

    `item_category` / `item_creator` map an item id to its side features (buffers, saved in the
    checkpoint) so rows carry only item ids in `history`.
    """

    def __init__(self, vocab: FeatureVocab, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleList(nn.Embedding(vocab.size_of(name), dim) for name in SPARSE_FEATURES)
        self.register_buffer("item_category", torch.as_tensor(vocab.item_category, dtype=torch.long))
        self.register_buffer("item_creator", torch.as_tensor(vocab.item_creator, dtype=torch.long))
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.05)

    def sparse(self, sparse: torch.Tensor) -> torch.Tensor:
        # sparse (B, S) → (B, S, E)
        return torch.stack([table(sparse[:, i]) for i, table in enumerate(self.tables)], dim=1)

    def item(self, item: torch.Tensor, category: torch.Tensor, creator: torch.Tensor) -> torch.Tensor:
        # any shape (...) → (..., E): an item as the sum of its id, category and creator embeddings
        return self.tables[ITEM](item) + self.tables[CATEGORY](category) + self.tables[CREATOR](creator)

    def candidate(self, sparse: torch.Tensor) -> torch.Tensor:
        # (B, S) → (B, E)
        return self.item(sparse[:, ITEM], sparse[:, CATEGORY], sparse[:, CREATOR])

    def history(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # history (B, L) item ids → embeddings (B, L, E) and validity mask (B, L)
        embedded = self.item(history, self.item_category[history], self.item_creator[history])
        return embedded, history != PADDING_ITEM


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis ignoring masked positions; all-masked rows give zeros (no NaN)."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: (B, L, E), (B, L) → (B, E); empty histories give zeros."""
    counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
    return (sequence * mask.unsqueeze(-1)).sum(dim=1) / counts


class TargetAttention(nn.Module):
    """The candidate attends over a sequence: (B, E), (B, L, E), (B, L) → (B, E)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, candidate: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("be,ble->bl", self.query(candidate), self.key(sequence)) * self.scale
        weights = masked_softmax(scores, mask)  # (B, L)
        return torch.einsum("bl,ble->be", weights, sequence)


class SequenceCompressor(nn.Module):
    """Compress a long history into K tokens (LONGER-style), queries conditioned on the candidate.

    (B, L, E) → (B, K, E). K learned queries, each shifted by a projection of the candidate, attend
    over the whole history, so the tokens summarise what in the history matters for this item.
    """

    def __init__(self, dim: int, n_tokens: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_tokens, dim) * 0.05)
        self.condition = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, candidate: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        queries = self.queries.unsqueeze(0) + self.condition(candidate).unsqueeze(1)  # (B, K, E)
        scores = torch.einsum("bke,ble->bkl", queries, self.key(sequence)) * self.scale
        weights = masked_softmax(scores, mask.unsqueeze(1))  # (B, K, L)
        return torch.einsum("bkl,ble->bke", weights, self.value(sequence))


class PerTokenFFN(nn.Module):
    """A separate feed-forward network for every token: (B, T, D) → (B, T, D)."""

    def __init__(self, n_tokens: int, width: int, mult: int) -> None:
        super().__init__()
        hidden = width * mult
        self.w_in = nn.Parameter(torch.randn(n_tokens, width, hidden) / math.sqrt(width))
        self.b_in = nn.Parameter(torch.zeros(n_tokens, hidden))
        self.w_out = nn.Parameter(torch.randn(n_tokens, hidden, width) / math.sqrt(hidden))
        self.b_out = nn.Parameter(torch.zeros(n_tokens, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.gelu(torch.einsum("btd,tdh->bth", tokens, self.w_in) + self.b_in)
        return torch.einsum("bth,thd->btd", hidden, self.w_out) + self.b_out


class TokenMixerBlock(nn.Module):
    """RankMixer-style block: parameter-free token mixing, then per-token FFNs, with residuals.

    Mixing: each token (width D) is split into T chunks of D/T; token t of the output gathers
    chunk t of every input token, so information crosses tokens without attention.
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

    def mix(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, d = tokens.shape
        return tokens.reshape(b, t, t, d // t).transpose(1, 2).reshape(b, t, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.norm_mix(tokens + self.mix(tokens))
        return self.norm_ffn(tokens + self.dropout(self.ffn(tokens)))
