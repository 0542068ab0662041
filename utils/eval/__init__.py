"""Scores: the published metrics, the validation protocol, folder evaluation, held-out checks."""
