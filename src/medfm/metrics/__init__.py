"""Metrics: pure functions on arrays, each with a bootstrap confidence interval.

``medfm.metrics.classification`` (AUROC, accuracy, balanced accuracy, F1, ECE, QWK) and
``medfm.metrics.bootstrap`` (seeded, stratified percentile bootstrap).
"""
