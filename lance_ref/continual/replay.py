"""A class-balanced reservoir of raw training samples (specs/continual.md#replay-buffer).

When full, a sample of a class holding the most slots replaces a random member of its own class
with probability slots / seen (reservoir sampling within the class); a sample of any other class
takes the slot of a random member of a largest class. Every class seen so far thus keeps an
almost equal share, each share a uniform sample of its class's stream (Chrysakis and Moens,
ICML 2020).
"""

from __future__ import annotations

import numpy as np


class ClassBalancedReservoir:
    def __init__(self, capacity: int, image_shape: tuple, image_dtype=np.uint8):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"buffer_size must be a positive int, got {capacity!r}")
        self.capacity = int(capacity)
        self.images = np.zeros((self.capacity, *image_shape), dtype=image_dtype)
        self.labels = np.zeros(self.capacity, dtype=np.int64)  # labels as the loss sees them
        self.classes = np.zeros(self.capacity, dtype=np.int64)  # dataset classes, for balance
        self.tasks = np.zeros(self.capacity, dtype=np.int64)
        self.size = 0
        self.seen = {}  # class -> samples of it offered so far

    def add(self, images, labels, classes, tasks, rng: np.random.Generator) -> None:
        for image, label, cls, task in zip(images, labels, classes, tasks):
            cls = int(cls)
            self.seen[cls] = self.seen.get(cls, 0) + 1
            slot = self._slot(cls, rng)
            if slot is not None:
                self.images[slot], self.labels[slot], self.classes[slot], self.tasks[slot] = image, label, cls, task

    def _slot(self, cls: int, rng) -> int | None:
        if self.size < self.capacity:
            self.size += 1
            return self.size - 1
        held = np.bincount(self.classes[: self.size], minlength=max(self.seen) + 1)
        if held[cls] == held.max():
            if rng.random() >= held[cls] / self.seen[cls]:
                return None
            return int(rng.choice(np.flatnonzero(self.classes[: self.size] == cls)))
        largest = np.flatnonzero(held == held.max())
        return int(rng.choice(np.flatnonzero(np.isin(self.classes[: self.size], largest))))

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of `count` stored samples drawn uniformly without replacement (fewer if the
        buffer holds fewer)."""
        return rng.choice(self.size, size=min(count, self.size), replace=False)

    def state(self) -> dict:
        seen = np.array(sorted(self.seen.items()), dtype=np.int64).reshape(-1, 2)
        return dict(images=self.images[: self.size], labels=self.labels[: self.size], classes=self.classes[: self.size],
                    tasks=self.tasks[: self.size], seen=seen)

    def load_state(self, state: dict) -> None:
        self.size = len(state["labels"])
        for name in ("images", "labels", "classes", "tasks"):
            getattr(self, name)[: self.size] = state[name]
        self.seen = {int(c): int(n) for c, n in state["seen"]}
