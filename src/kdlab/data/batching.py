"""The batches of an epoch: shuffled, and grouped by length so that dynamic padding wastes little.

The whole epoch's batch list is computed up front from (seed, epoch) alone. That makes resuming exact (the
trainer slices off the batches already done) and lets every process of a distributed run derive the same
list and take its own shard of each batch, with no communication.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class EpochBatches:
    """Deterministic batches of example indices for each epoch.

    * ``shuffle=False``: indices in order, cut into consecutive batches (evaluation).
    * ``shuffle=True, bucket=False``: a random permutation cut into batches.
    * ``shuffle=True, bucket=True``: a random permutation cut into pools of ``batch_size * pool_factor``
      indices; each pool is sorted by length and cut into batches, and the order of all batches is shuffled.
      Batches then hold examples of similar length (little padding), while pools keep each batch's content
      and the batch order random.

    Only the last batch can be short (pools are whole multiples of ``batch_size``); ``drop_last`` drops it.
    Randomness comes from a local ``numpy.random.RandomState`` seeded with ``(seed, epoch)``, never from the
    global generators, so other code's random draws cannot change the batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        bucket: bool = True,
        pool_factor: int = 50,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if pool_factor < 1:
            raise ValueError(f"pool_factor must be at least 1, got {pool_factor}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.bucket = bucket
        self.pool_factor = pool_factor
        self.drop_last = drop_last

    def __len__(self) -> int:
        """Number of batches per epoch."""
        count = len(self.lengths)
        if self.drop_last:
            return count // self.batch_size
        return -(-count // self.batch_size)

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def for_epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of example indices) of ``epoch``; the same for the same (seed, epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        count = len(self.lengths)
        if not self.shuffle:
            batches = self._cut(np.arange(count))
        else:
            rng = np.random.RandomState([self.seed, epoch])
            order = rng.permutation(count)
            if not self.bucket:
                batches = self._cut(order)
            else:
                pool_size = self.batch_size * self.pool_factor
                batches = []
                for start in range(0, count, pool_size):
                    pool = order[start : start + pool_size]
                    # Stable sort: equal lengths keep their random order, so ties are not biased by index.
                    pool = pool[np.argsort(self.lengths[pool], kind="stable")]
                    batches.extend(self._cut(pool))
                batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        return [batch.tolist() for batch in batches]


def padded_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> int:
    """Tokens a model processes for ``batches`` under dynamic padding (each batch padded to its longest)."""
    sizes = np.asarray(lengths, dtype=np.int64)
    return int(sum(len(batch) * int(sizes[list(batch)].max()) for batch in batches if len(batch)))
