"""Evaluation: frozen features, baselines, probes, ABX and reports."""
