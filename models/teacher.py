"""The teacher: a token-mixing backbone over feature tokens plus a long-sequence encoder.

Scaling axes are config knobs: width/depth/embed_dim (dense parameters), seq_len (behaviour
history length); data volume is the teacher's sampling policy.
"""

import torch
from torch import nn

from models.layers import (
    MLP,
    N_DENSE,
    N_SPARSE,
    USER,
    FeatureEmbedding,
    SequenceCompressor,
    TargetAttention,
    TokenMixerBlock,
    masked_mean,
)
from recdistill_dagster.config import TeacherArch
from recdistill_dagster.data.schema import FeatureVocab


class TeacherModel(nn.Module):
    def __init__(self, vocab: FeatureVocab, arch: TeacherArch) -> None:
        super().__init__()
        self.arch = arch
        e = arch.embed_dim
        self.embedding = FeatureEmbedding(vocab, e)
        self.dense = nn.Linear(N_DENSE, e)
        self.position = nn.Embedding(arch.seq_len, e)  # recency: position 0 = oldest kept event
        nn.init.normal_(self.position.weight, std=0.02)
        self.compressor = SequenceCompressor(e, arch.compressed_tokens)
        self.target_attention = TargetAttention(e)
        # Feature vectors: sparse (S) + dense (1) + compressed history (K) + attended history,
        # candidate ⊙ attended, mean history and candidate ⊙ mean (4). The products make "how much of
        # the history matches this item" explicit; the mean keeps shares that softmax pooling loses.
        # Plus user ⊙ candidate (1), as in the student.
        n_vectors = N_SPARSE + 1 + arch.compressed_tokens + 5
        self.tokenize = nn.Linear(n_vectors * e, arch.n_tokens * arch.width)
        self.blocks = nn.ModuleList(
            TokenMixerBlock(arch.n_tokens, arch.width, arch.ffn_mult, arch.dropout) for _ in range(arch.depth)
        )
        self.head = MLP(arch.width, (arch.width,), 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # sparse (B, S) int64, dense (B, N_DENSE) float, history (B, L) int64 → logit (B,)
        b = sparse.shape[0]
        history = history[:, -self.arch.seq_len :]
        features = self.embedding.sparse(sparse)  # (B, S, E)
        candidate = self.embedding.candidate(sparse)  # (B, E)
        sequence, mask = self.embedding.history(history)  # (B, L, E), (B, L)
        sequence = sequence + self.position.weight[-history.shape[1] :].unsqueeze(0)
        compressed = self.compressor(candidate, sequence, mask)  # (B, K, E)
        attended = self.target_attention(candidate, compressed, torch.ones_like(compressed[..., 0], dtype=torch.bool))
        mean = masked_mean(sequence, mask)  # (B, E)
        vectors = torch.cat(
            [features, self.dense(dense).unsqueeze(1), compressed, attended.unsqueeze(1),
             (candidate * attended).unsqueeze(1), mean.unsqueeze(1), (candidate * mean).unsqueeze(1),
             (features[:, USER] * candidate).unsqueeze(1)], dim=1
        )  # (B, S + 1 + K + 5, E)
        tokens = self.tokenize(vectors.reshape(b, -1)).reshape(b, self.arch.n_tokens, self.arch.width)
        for block in self.blocks:
            tokens = block(tokens)  # (B, T, D)
        return self.head(tokens.mean(dim=1)).squeeze(-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
