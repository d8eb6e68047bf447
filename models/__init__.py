"""PyTorch model code for Rec-Distill: teacher, student, losses, debias, training loops, metrics.

Pure code, no Dagster: the orchestration layer calls into these modules. Shapes are written as
comments: B = batch, S = sparse features, L = history length, E = embedding width, K = compressed
history tokens, T = mixer tokens, D = token width.

    features    frames → FeatureTensors
    layers      embeddings, attention, sequence compression, token mixing
    teacher     TeacherModel (token mixer + long-sequence encoder)
    student     StudentModel (decoupled towers), StudentMainTower (the served part)
    debias      sampling-aware corrections and the teacher-target modes
    losses      task / distillation losses and the tower variants
    training    train_teacher (records logits), train_student
    inference   predict_logits (eval-mode scores in row order)
    metrics     AUC, LogLoss, paired bootstrap of η
    checkpoint  checkpoints as bytes
"""

from models.features import FeatureTensors, frame_to_tensors
from models.student import StudentMainTower, StudentModel, StudentOutput
from models.teacher import TeacherModel

__all__ = [
    "FeatureTensors", "StudentMainTower", "StudentModel", "StudentOutput", "TeacherModel", "frame_to_tensors",
]
