"""Rung: AutoML studies (ASHA, BOHB, Hyperband, ...) on Kubernetes or on one machine."""

__version__ = "0.1.0"
