"""Random search: uniform over the space (log-uniform for log parameters)."""

from rung.search.base import Sampler


class RandomSampler(Sampler):
    def propose(self, index, observations):
        return self.space.sample(self.rng(index))
