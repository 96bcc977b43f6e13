"""Mixed-resolution batches for high-resolution adaptation (official `CombinedDataLoader`, config
`dinov3/configs/train/dinov3_vit7b16_high_res_adapt.yaml`).

Every global batch g (counted from the start of training, across epochs) gets one crop-size triple
`draw_resolution(probabilities, seed, g)`: a pure function of (seed, g), so all ranks draw the same triple without
communicating and a resumed run draws what the uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .collate import SeededSamples


def draw_resolution(probabilities: Sequence[float], seed: int, batch_index: int) -> int:
    """Index i of the triple of global batch `batch_index`, with P(i) = probabilities[i]."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + batch_index) % 2**62)
    weights = torch.tensor(probabilities, dtype=torch.float64)
    return int(torch.multinomial(weights, 1, generator=generator))


class MixedResolutionBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's share of each global batch, as `[(sample index, resolution index), ...]`; `seed` seeds the draws.

    Each epoch (read from `dataset.epoch`, which the trainer sets) the dataset is shuffled by a permutation seeded with
    (`dataset.seed`, epoch), identical on every rank, and cut into global batches of `batch_size · world_size` samples (an
    incomplete last one is dropped). Rank r takes rows [r·batch_size, (r + 1)·batch_size) of each, all at the
    resolution drawn for that global batch. Pass it as a DataLoader's `batch_sampler`, without a distributed wrapper.
    """

    def __init__(
        self,
        dataset: SeededSamples,
        batch_size: int,
        probabilities: Sequence[float],
        seed: int = 65537,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.probabilities = list(probabilities)
        self.world_size, self.rank = world_size, rank
        if len(self) == 0:
            raise ValueError(
                f"The dataset has {len(dataset)} samples, fewer than one global batch of {batch_size} x {world_size}."
            )

    def __len__(self) -> int:
        return len(self.dataset) // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.dataset.epoch
        generator = torch.Generator().manual_seed((self.dataset.seed * 1_000_003 + epoch) % 2**62)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        global_batch = self.batch_size * self.world_size
        for batch in range(len(self)):
            resolution = draw_resolution(self.probabilities, self.seed, epoch * len(self) + batch)
            start = batch * global_batch + self.rank * self.batch_size
            yield [(index, resolution) for index in order[start : start + self.batch_size]]
