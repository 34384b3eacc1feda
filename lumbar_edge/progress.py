"""A dependency-free progress bar for long work (scans, synthesis, training, inference).

Writes to stderr, redraws in place on a terminal and prints a few plain lines otherwise (CI logs),
so progress shows wherever the tool runs without pulling tqdm into the light runtime.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """A counter with a label that reports how far a job of ``total`` steps has come.

    Use as a context manager; ``update(n)`` advances, ``set_postfix(text)`` adds a status text
    (for example the current losses). ``enabled=False`` makes every call a no-op.
    """

    def __init__(self, total: Optional[int], label: str, *, enabled: bool = True,
                 stream: Optional[TextIO] = None, min_interval: float = 0.2):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.postfix = ""
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._min_interval = min_interval
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # Without a terminal, print at most ~10 lines per job so logs stay readable.
        self._next_plain_fraction = 0.0
        self._plain_printed: "tuple | None" = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        self._draw(force=False)

    def set_postfix(self, text: str) -> None:
        self.postfix = text
        self._draw(force=False)

    def close(self) -> None:
        if self.enabled:
            self._draw(force=True, final=True)

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        if self.total:
            frac = min(1.0, self.count / self.total)
            width = 24
            filled = int(round(frac * width))
            bar = "#" * filled + "-" * (width - filled)
            eta = (elapsed / self.count * (self.total - self.count)) if self.count else 0.0
            text = f"{self.label} [{bar}] {self.count}/{self.total} {elapsed:.1f}s eta {eta:.1f}s"
        else:
            text = f"{self.label} {self.count} {elapsed:.1f}s"
        if self.postfix:
            text += f" {self.postfix}"
        return text

    def _draw(self, *, force: bool, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if not force and now - self._last_draw < self._min_interval:
                return
            self._last_draw = now
            self.stream.write("\r\x1b[K" + self._line() + ("\n" if final else ""))
            self.stream.flush()
            return
        frac = (self.count / self.total) if self.total else None
        if final and self._plain_printed == (self.count, self.postfix):
            return  # the last plain line already shows the final state
        if final or (frac is not None and frac >= self._next_plain_fraction):
            self._plain_printed = (self.count, self.postfix)
            if frac is not None:
                self._next_plain_fraction = frac + 0.1
            self.stream.write(self._line() + "\n")
            self.stream.flush()


def track(items: Iterable[T], label: str, *, total: Optional[int] = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` while showing a progress bar; ``total`` defaults to ``len(items)``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, label, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()
