"""Natural micro-batching on the event loop: work submitted while the loop is busy is done in one call.

CatBoost's `predict` costs ~0.2 ms per call whatever the row count (1,000 rows cost ~1.2 ms), and a Redis
round trip costs the same for 1 or 50 pipelined HMGETs. Under concurrency, requests that become ready in
the same loop iteration are served by one call. Nothing waits on a timer: the flush is scheduled with
`call_soon`, so a lone request is processed at once (no added latency at low load).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """`await submit(items)` -> results for those items; `fn(all_items)` runs once per loop iteration.

    `fn` is synchronous (CPU work done inline, e.g. CatBoost) or a coroutine function (I/O, e.g. a Redis
    pipeline); exceptions are delivered to every waiting caller of that batch.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]] | Callable[[list[T]], Awaitable[list[R]]],
        max_items: int = 4096,
    ):
        self._fn = fn
        self._is_async = asyncio.iscoroutinefunction(fn)
        self._max = max_items
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done
        self.calls = 0
        self.items = 0

    async def submit(self, items: list[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((items, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _take(self) -> list[tuple[list[T], asyncio.Future[list[R]]]]:
        batch: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        n = 0
        while self._pending and (not batch or n + len(self._pending[0][0]) <= self._max):
            items, fut = self._pending.pop(0)
            batch.append((items, fut))
            n += len(items)
        return batch

    def _flush(self) -> None:
        self._scheduled = False
        batch = self._take()
        if self._pending:  # more than max_items waiting: next iteration
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        flat = [x for items, _ in batch for x in items]
        self.calls += 1
        self.items += len(flat)
        if self._is_async:
            task = asyncio.get_running_loop().create_task(self._run_async(flat, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            results = self._fn(flat)  # type: ignore[arg-type]
        except Exception as e:
            self._fail(batch, e)
            return
        self._deliver(batch, results)  # type: ignore[arg-type]

    async def _run_async(self, flat: list[T], batch: list[tuple[list[T], asyncio.Future[list[R]]]]) -> None:
        try:
            results = await self._fn(flat)  # type: ignore[misc]
        except Exception as e:
            self._fail(batch, e)
            return
        self._deliver(batch, results)

    @staticmethod
    def _deliver(batch: list[tuple[list[T], asyncio.Future[list[R]]]], results: list[R]) -> None:
        i = 0
        for items, fut in batch:
            if not fut.done():
                fut.set_result(results[i : i + len(items)])
            i += len(items)

    @staticmethod
    def _fail(batch: list[tuple[list[T], asyncio.Future[list[R]]]], e: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(e)
