"""Progress for long-running stages: tqdm bars on a terminal, periodic log lines otherwise (CI, DVC)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    yield from tqdm(
        it, total=total, desc=desc, file=sys.stderr, mininterval=1.0, disable=None if total else True
    )
