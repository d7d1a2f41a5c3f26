"""Samplers: propose configurations for new trials."""

from rung.search.base import Observation, Sampler

__all__ = ["Observation", "Sampler"]
