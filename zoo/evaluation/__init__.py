"""Evaluation tasks behind ``evaluate.py``: ``task=eval`` (metrics of one checkpoint)."""
