"""The student: same feature families, short history, small backbone, decoupled towers.

    sparse (B, S) ──► embeddings (B, S·E) ─────────────────────────────┐
    dense (B, 3)  ──► projection (B, E) ───────────────────────────────┤
    history (last seq_len items) ─► DIN target attention + mean (B, 5·E)┤  (incl. user ⊙ candidate)
                                                         concat ► backbone MLP (B, H)
                                                                  ├► main tower ► main logit (serving)
                                                                  └► aux tower  ► aux logit (training only)

The main tower is trained on the task loss only; the auxiliary tower takes the distillation
signal. Both read the shared backbone, so the main tower benefits through it (DESIGN.md §1).
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.debias import exact_calibrated_logit
from models.layers import (
    CANDIDATE_IDS,
    MLP,
    N_DENSE,
    TRAFFIC_SOURCE,
    USER,
    FeatureEmbedding,
    HistoryMatch,
    TargetAttention,
    count_parameters,
    history_windows,
    masked_mean,
)
from recdistill_dagster.config import SamplingPolicy, StudentArch
from recdistill_dagster.data.schema import SPARSE_FEATURES, FeatureVocab


@dataclass
class StudentOutput:
    main_logit: torch.Tensor  # (B,) raw, in the student's sampling space
    aux_logit: torch.Tensor | None  # (B,) in decoupled modes, else None


class _StudentTrunk(nn.Module):
    """Features → shared backbone representation; the part both the trainer and the server run.

    Subclasses set `embedding`, `dense`, `target_attention`, `match`, `match_projection`, `backbone`,
    `seq_len` and `attention_len`.
    """

    embedding: FeatureEmbedding
    dense: nn.Linear
    target_attention: TargetAttention
    match: HistoryMatch | None
    match_projection: nn.Linear | None
    backbone: MLP
    seq_len: int
    attention_len: int
    read_features: torch.Tensor  # (S',) int64 indices into SPARSE_FEATURES: the families the backbone reads

    def represent(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # sparse (B, S) int64, dense (B, N_DENSE), history (B, ≥seq_len) int → (B, H)
        history = history[:, -self.seq_len :]
        embedded = self.embedding.sparse(sparse)  # (B, S, E)
        candidate = self.embedding.candidate(sparse)  # (B, E)
        # Only the newest attention_len events are embedded; the whole window feeds the counters.
        sequence, mask = self.embedding.history(history[:, -self.attention_len :])  # (B, a, E), (B, a)
        attended = self.target_attention(candidate, sequence, mask)  # (B, E)
        mean = masked_mean(sequence, mask)  # (B, E)
        parts = [embedded.index_select(1, self.read_features).flatten(1), self.dense(dense)]  # (B, S'·E), (B, E)
        if self.match is not None and self.match_projection is not None:
            history_category, history_creator = self.embedding.side_info(history)  # (B, L) each
            match = self.match(sparse[:, CANDIDATE_IDS], history, history_category, history_creator)  # (B, 4·W)
            parts.append(self.match_projection(match))  # (B, E)
        parts += [attended, candidate * attended, mean, candidate * mean, embedded[:, USER] * candidate]
        shared: torch.Tensor = self.backbone(torch.cat(parts, dim=1))  # (B, H)
        return shared


class StudentModel(_StudentTrunk):
    def __init__(self, vocab: FeatureVocab, arch: StudentArch) -> None:
        super().__init__()
        self.arch = arch
        self.seq_len = arch.seq_len
        self.attention_len = arch.attended_len
        e = arch.embed_dim
        self.embedding = FeatureEmbedding(vocab, e)
        self.dense = nn.Linear(N_DENSE, e)
        self.target_attention = TargetAttention(e)
        self.match = HistoryMatch(history_windows(arch.seq_len)) if arch.history_counters else None
        self.match_projection = nn.Linear(self.match.n_features, e) if self.match is not None else None
        read = arch.read_sparse_features
        self.register_buffer("read_features", torch.tensor([SPARSE_FEATURES.index(f) for f in read]))
        # read sparse (S'), dense, history match statistics (if on), attended history, candidate ⊙ attended,
        # mean history, candidate ⊙ mean, user ⊙ candidate (a user's lasting taste for this item).
        n_inputs = len(read) + 1 + (1 if self.match is not None else 0) + 5
        self.backbone = MLP(n_inputs * e, arch.backbone_hidden)
        self.main_tower = MLP(self.backbone.out_dim, (arch.tower_hidden,), 1)
        # Identical inputs and shape; exists only in decoupled modes and is never served.
        self.aux_tower = MLP(self.backbone.out_dim, (arch.tower_hidden,), 1) if self.decoupled else None

    @property
    def decoupled(self) -> bool:
        return self.arch.towers.startswith("decoupled")

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> StudentOutput:
        shared = self.represent(sparse, dense, history)  # (B, H)
        main = self.main_tower(shared).squeeze(-1)  # (B,)
        aux = self.aux_tower(shared).squeeze(-1) if self.aux_tower is not None else None
        return StudentOutput(main, aux)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self)

    def serving_module(self, policy: SamplingPolicy) -> "StudentMainTower":
        return StudentMainTower(self, policy)


class StudentMainTower(_StudentTrunk):
    """What serves: backbone + main tower → calibrated click probability on the unsampled scale (B,).

    The main tower is trained on the student's sampled stream, so its logit lives in that sampling
    space; the exact correction z − log(r_s · p_x[traffic source]) maps it back. The policy is kept
    as buffers so the exported program is self-contained. Shares (not copies) the student's
    modules; the auxiliary tower is not part of it.
    """

    def __init__(self, student: StudentModel, policy: SamplingPolicy) -> None:
        super().__init__()
        self.embedding = student.embedding
        self.dense = student.dense
        self.target_attention = student.target_attention
        self.match = student.match
        self.match_projection = student.match_projection
        self.register_buffer("read_features", student.read_features)
        self.backbone = student.backbone
        self.main_tower = student.main_tower
        self.seq_len = student.seq_len
        self.attention_len = student.attention_len
        self.r_s: torch.Tensor
        self.p_x: torch.Tensor
        self.register_buffer("r_s", torch.tensor(policy.r_s, dtype=torch.float32))
        self.register_buffer("p_x", torch.tensor(policy.positive_keep_by_source, dtype=torch.float32))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # sparse (B, S) int64, dense (B, 3) float32, history (B, seq_len) int64 → probability (B,)
        logit = self.main_tower(self.represent(sparse, dense, history)).squeeze(-1)
        p_x = self.p_x[sparse[:, TRAFFIC_SOURCE]]  # (B,)
        return torch.sigmoid(exact_calibrated_logit(logit, self.r_s, p_x))
