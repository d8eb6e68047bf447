"""PyTorch model code for Rec-Distill: teacher, student, losses, debias, training, metrics.

Pure code: no Dagster imports. Shapes are written as comments: B = batch, L = history length,
T = tokens, D = width.
"""
