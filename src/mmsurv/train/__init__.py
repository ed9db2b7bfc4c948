"""Survival training: MCAT's NLL loss, c-index, the batch-1 accumulation loop and one-fold runs.

Entry point for the workflow and the CLI: :func:`mmsurv.train.run.train_fold`.
"""
