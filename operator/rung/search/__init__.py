"""Samplers: propose configurations for new trials."""

from rung.search.annealing import AnnealingSampler
from rung.search.base import Observation, Sampler
from rung.search.evolution import EvolutionSampler
from rung.search.grid import GridSampler
from rung.search.kde import KDESampler
from rung.search.motpe import MOTPESampler
from rung.search.random import RandomSampler
from rung.search.sobol import SobolSampler

# algorithm.sampler names in a manifest -> sampler class
SAMPLERS: dict[str, type[Sampler]] = {
    "random": RandomSampler,
    "grid": GridSampler,
    "sobol": SobolSampler,
    "tpe": KDESampler,
    "evolution": EvolutionSampler,
    "annealing": AnnealingSampler,
    "motpe": MOTPESampler,
}

__all__ = ["SAMPLERS", "AnnealingSampler", "EvolutionSampler", "GridSampler", "KDESampler",
           "MOTPESampler", "Observation", "RandomSampler", "Sampler", "SobolSampler"]
