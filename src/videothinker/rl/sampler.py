"""A resumable, deterministic order over the training records.

Each epoch is a fresh permutation drawn from (seed, epoch), so the data position is fully described
by one integer, the number of prompts consumed; a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import torch


class PromptSampler:
    """Yields record indices epoch after epoch; its whole state is ``consumed``.

    Args:
        num_records: size of the dataset.
        seed: seed of the per-epoch permutations.
        shuffle: draw a permutation per epoch (else the file order).
    """

    def __init__(self, num_records: int, seed: int, shuffle: bool = True):
        if num_records <= 0:
            raise ValueError("no training records: the data file (after filtering) is empty")
        self.num_records, self.seed, self.shuffle = num_records, seed, shuffle
        self.consumed = 0
        self._epoch, self._order = -1, None

    def _order_of(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._order = torch.randperm(self.num_records, generator=gen).tolist()
            else:
                self._order = list(range(self.num_records))
            self._epoch = epoch
        return self._order

    @property
    def epoch(self) -> float:
        return self.consumed / self.num_records

    def peek(self, n: int) -> list[int]:
        """The next ``n`` record indices, without consuming them (what `take` will return)."""
        out = []
        for position in range(self.consumed, self.consumed + n):
            epoch, pos = divmod(position, self.num_records)
            out.append(self._order_of(epoch)[pos])
        return out

    def take(self, n: int) -> list[int]:
        """The next ``n`` record indices (crossing into the next epoch when one runs out)."""
        out = self.peek(n)
        self.consumed += n
        return out

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed, "num_records": self.num_records}

    def load_state_dict(self, state: dict) -> None:
        if state["num_records"] != self.num_records or state["seed"] != self.seed:
            raise ValueError(
                f"cannot resume: the checkpoint was made with {state['num_records']} records and seed "
                f"{state['seed']}, this run has {self.num_records} records and seed {self.seed}"
            )
        self.consumed = int(state["consumed"])
