"""The student: same feature families, short history, small backbone, decoupled towers.

The main tower is the serving model (trained on the task loss only); the auxiliary tower takes the
distillation signal. Both read the shared backbone, so the main tower benefits through it.
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.debias import exact_calibrated_logit
from models.layers import (
    MLP,
    N_DENSE,
    N_SPARSE,
    TRAFFIC_SOURCE,
    USER,
    FeatureEmbedding,
    TargetAttention,
    masked_mean,
)
from recdistill_dagster.config import SamplingPolicy, StudentArch
from recdistill_dagster.data.schema import FeatureVocab


@dataclass
class StudentOutput:
    main_logit: torch.Tensor  # (B,)
    aux_logit: torch.Tensor | None  # (B,) in decoupled modes


class StudentModel(nn.Module):
    def __init__(self, vocab: FeatureVocab, arch: StudentArch) -> None:
        super().__init__()
        self.arch = arch
        self.seq_len = arch.seq_len
        e = arch.embed_dim
        self.embedding = FeatureEmbedding(vocab, e)
        self.dense = nn.Linear(N_DENSE, e)
        self.target_attention = TargetAttention(e)
        # sparse, dense, attended history, candidate ⊙ attended, mean history, candidate ⊙ mean,
        # user ⊙ candidate (a user's lasting taste for this item, learnable from soft labels)
        in_dim = (N_SPARSE + 1 + 5) * e
        self.backbone = MLP(in_dim, arch.backbone_hidden)
        out_dim = arch.backbone_hidden[-1] if arch.backbone_hidden else in_dim
        self.main_tower = MLP(out_dim, (arch.tower_hidden,), 1)
        self.aux_tower = MLP(out_dim, (arch.tower_hidden,), 1) if self.decoupled else None

    @property
    def decoupled(self) -> bool:
        return self.arch.towers.startswith("decoupled")

    def shared(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # → backbone representation (B, H)
        history = history[:, -self.seq_len :]
        embedded = self.embedding.sparse(sparse)  # (B, S, E)
        features = embedded.flatten(1)  # (B, S·E)
        candidate = self.embedding.candidate(sparse)  # (B, E)
        sequence, mask = self.embedding.history(history)  # (B, l, E), (B, l)
        attended = self.target_attention(candidate, sequence, mask)
        mean = masked_mean(sequence, mask)
        return self.backbone(
            torch.cat([features, self.dense(dense), attended, candidate * attended, mean, candidate * mean,
                       embedded[:, USER] * candidate], dim=1)
        )

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> StudentOutput:
        shared = self.shared(sparse, dense, history)
        main = self.main_tower(shared).squeeze(-1)
        aux = self.aux_tower(shared).squeeze(-1) if self.aux_tower is not None else None
        return StudentOutput(main, aux)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def serving_module(self, policy: SamplingPolicy) -> "StudentMainTower":
        return StudentMainTower(self, policy)


class StudentMainTower(nn.Module):
    """What serves: backbone + main tower, returning a calibrated click probability.

    The main tower is trained on the student's sampled stream, so its logit lives in that sampling
    space; the exact correction (per traffic source) maps it to the unsampled scale.
    """

    def __init__(self, student: StudentModel, policy: SamplingPolicy) -> None:
        super().__init__()
        self.embedding = student.embedding
        self.dense = student.dense
        self.target_attention = student.target_attention
        self.backbone = student.backbone
        self.main_tower = student.main_tower
        self.seq_len = student.arch.seq_len
        self.register_buffer("r_s", torch.tensor(policy.r_s, dtype=torch.float32))
        self.register_buffer("p_x", torch.tensor(policy.positive_keep_by_source, dtype=torch.float32))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        shared = StudentModel.shared(self, sparse, dense, history)  # type: ignore[arg-type]
        logit = self.main_tower(shared).squeeze(-1)
        p_x = self.p_x[sparse[:, TRAFFIC_SOURCE]]
        return torch.sigmoid(exact_calibrated_logit(logit, self.r_s.expand_as(logit), p_x))
