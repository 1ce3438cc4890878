"""Evaluation: pure metrics (``alignkit.eval.metrics``), the eval runner, comparisons,
reports and plots, and rewarded soups. Importing this package loads nothing heavy.
"""
