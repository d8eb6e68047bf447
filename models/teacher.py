"""The teacher: a token-mixing backbone over feature tokens plus a long-sequence encoder.

Scaling axes are config knobs (DESIGN.md §1 "Teacher scaling"): embed_dim / width / n_tokens /
depth / ffn_mult (dense parameters), seq_len and compressed_tokens (behaviour history); data volume
is the teacher's sampling policy, outside the model.

    sparse (B, S) ──► embeddings (B, S, E) ─────────────────────────────┐
    dense (B, 3)  ──► projection (B, E) ────────────────────────────────┤
    history (B, L) ─► item ⊕ category ⊕ creator + recency position      │
                      └► SequenceCompressor (K tokens + mean) (B, K+1, E)┤
                         └► candidate target attention (B, E) ───────────┤
                                              concat ► tokenize (B, T, D)
                                              ► depth × TokenMixerBlock ► mean over T ► MLP ► logit (B,)
"""

import torch
from torch import nn

from models.layers import (
    CANDIDATE_IDS,
    CATEGORY,
    CREATOR,
    ITEM,
    MLP,
    N_DENSE,
    N_SPARSE,
    USER,
    ChunkTokenizer,
    FeatureEmbedding,
    HistoryMatch,
    SequenceCompressor,
    TargetAttention,
    TokenMixerBlock,
    count_parameters,
    history_windows,
)
from recdistill_dagster.config import TeacherArch
from recdistill_dagster.data.schema import FeatureVocab


class TeacherModel(nn.Module):
    def __init__(self, vocab: FeatureVocab, arch: TeacherArch) -> None:
        super().__init__()
        self.arch = arch
        self.seq_len = arch.seq_len
        e = arch.embed_dim
        self.embedding = FeatureEmbedding(vocab, e)
        self.dense = nn.Linear(N_DENSE, e)
        self.position = nn.Embedding(arch.seq_len, e)  # recency: the last row is the newest event
        nn.init.normal_(self.position.weight, std=0.02)
        self.compressor = SequenceCompressor(e, arch.compressed_tokens, mean_token=True)
        self.target_attention = TargetAttention(e)
        self.match = HistoryMatch(history_windows(arch.seq_len))
        self.match_projection = nn.Linear(self.match.n_features, e)
        # Feature vectors: sparse (S) + dense (1) + history match statistics (1) + compressed history
        # (K) + 5 interactions: attended history, candidate ⊙ attended, mean history, candidate ⊙ mean,
        # user ⊙ candidate. The products make "how much of the history is like this item" explicit.
        n_vectors = N_SPARSE + 2 + arch.compressed_tokens + 5
        self.tokenize = ChunkTokenizer(n_vectors * e, arch.n_tokens, arch.width)
        self.blocks = nn.ModuleList(
            TokenMixerBlock(arch.n_tokens, arch.width, arch.ffn_mult, arch.dropout) for _ in range(arch.depth)
        )
        self.head = MLP(arch.width, (arch.width,), 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # sparse (B, S) int64, dense (B, N_DENSE) float, history (B, ≥L or <L) int → logit (B,)
        b = sparse.shape[0]
        k = self.arch.compressed_tokens
        history = history[:, -self.seq_len :]
        features = self.embedding.sparse(sparse)  # (B, S, E)
        # The candidate shares the history items' representation: the sum of its three embeddings.
        candidate = features[:, ITEM] + features[:, CATEGORY] + features[:, CREATOR]  # (B, E)
        sequence, mask = self.embedding.history(history, self.embedding.item_table())  # (B, L, E), (B, L)
        history_category, history_creator = self.embedding.side_info(history)  # (B, L) each
        match = self.match(sparse[:, CANDIDATE_IDS], history, history_category, history_creator)  # (B, 4·W)
        position = self.position.weight[-history.shape[1] :]  # (L, E), aligned to the newest event
        summary = self.compressor(candidate, sequence, mask, position)  # (B, K + 1, E)
        compressed, mean = summary[:, :k], summary[:, k]  # (B, K, E), (B, E)
        attended = self.target_attention(candidate, compressed)  # (B, E); zeros for empty histories
        vectors = torch.cat(
            [features, self.dense(dense).unsqueeze(1), self.match_projection(match).unsqueeze(1), compressed,
             torch.stack([attended, candidate * attended, mean, candidate * mean,
                          features[:, USER] * candidate], dim=1)],
            dim=1,
        )  # (B, S + 2 + K + 5, E)
        tokens = self.tokenize(vectors.reshape(b, -1))  # (B, T, D)
        for block in self.blocks:
            tokens = block(tokens)  # (B, T, D)
        logit: torch.Tensor = self.head(tokens.mean(dim=1)).squeeze(-1)  # (B,)
        return logit

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self)
