"""Progress for long-running stages: a tqdm bar on a terminal, a log line per ~10% otherwise (CI, DVC)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("progress")


def progress(it: Iterable[T], total: int, desc: str = "") -> Iterator[T]:
    if sys.stderr.isatty():
        yield from tqdm(it, total=total, desc=desc, file=sys.stderr, mininterval=1.0)
        return
    start, step, next_report = time.monotonic(), max(1, total // 10), 0
    for i, item in enumerate(it, 1):
        yield item
        if i >= next_report or i == total:
            elapsed = time.monotonic() - start
            eta = elapsed / i * (total - i)
            log.info(
                "%s: %d/%d (%.0f%%), %.0f s elapsed, ~%.0f s left",
                desc,
                i,
                total,
                100 * i / total,
                elapsed,
                eta,
            )
            next_report = i + step
