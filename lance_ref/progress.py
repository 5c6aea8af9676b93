"""A dependency-free progress bar for long loops (redrawn in place on a terminal)."""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """12.3 -> "12s"; 83 -> "1m23s"; 4000 -> "1h06m"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Wrap an iterable; `set(**fields)` adds live figures (loss, accuracy) to the bar, floats
    with 4 decimals and anything else as given.

    On a terminal the bar is redrawn in place, each line padded over the previous one, with the
    time left; elsewhere (CI logs, pipes) only the final line is written, so logs stay short.
    `summary()`, if given, runs after the last item and returns fields for the final line (an
    epoch's test accuracy).
    """

    def __init__(self, iterable, total: int | None = None, label: str = "", stream=None, enabled: bool = True, summary=None):
        self.iterable, self.label, self.summary = iterable, label, summary
        self.total = total if total is not None else len(iterable) if hasattr(iterable, "__len__") else None
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.fields: dict = {}
        self.done, self.drawn = 0, 0  # items done; length of the line on the terminal
        self.start = time.perf_counter()

    def set(self, **fields) -> None:
        self.fields.update(fields)

    def line(self, final: bool = False) -> str:
        elapsed = time.perf_counter() - self.start
        figures = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        if self.total is None:  # an iterable of unknown length: a count
            return f"{self.label} {self.done} {duration(elapsed)} {figures}".rstrip()
        width = 24
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        timing = duration(elapsed)
        if not final and 0 < self.done < self.total:
            timing += f" eta {duration(elapsed / self.done * (self.total - self.done))}"
        return f"{self.label} [{bar}] {self.done}/{self.total} {timing} {figures}".rstrip()

    def draw(self, text: str, end: str = "") -> None:
        self.stream.write(("\r" if self.live else "") + text.ljust(self.drawn) + end)
        self.stream.flush()
        self.drawn = 0 if end else len(text)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.done += 1
            if self.live:
                self.draw(self.line())
        if self.summary is not None:
            self.set(**self.summary())
        if self.enabled:
            self.draw(self.line(final=True), end="\n")
