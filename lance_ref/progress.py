"""A dependency-free progress bar for long loops (redrawn in place on a terminal)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Wrap an iterable; `set(**fields)` adds live figures (loss, accuracy) to the bar.

    On a terminal the bar is redrawn in place; elsewhere (CI logs, pipes) only the final
    line is written, so logs stay short.
    """

    def __init__(self, iterable, total: int | None = None, label: str = "", stream=None, enabled: bool = True):
        self.iterable, self.label = iterable, label
        self.total = total if total is not None else len(iterable)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.fields: dict = {}
        self.done = 0
        self.start = time.perf_counter()

    def set(self, **fields) -> None:
        self.fields.update(fields)

    def line(self) -> str:
        width = 24
        filled = width * self.done // max(self.total, 1)
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        figures = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        bar = "#" * filled + "-" * (width - filled)
        return f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {rate:6.1f}it/s {figures}"

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.done += 1
            if self.live:
                self.stream.write("\r" + self.line())
                self.stream.flush()
        if self.enabled:
            self.stream.write(("\r" if self.live else "") + self.line() + "\n")
            self.stream.flush()
