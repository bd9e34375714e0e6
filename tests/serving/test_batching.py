import asyncio

import pytest

from serving.batching import MicroBatcher


def test_concurrent_submissions_share_one_call_and_get_their_own_results():
    calls = []

    def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def main():
        b = MicroBatcher(double)
        results = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(10)))
        alone = await b.submit([7])
        return results, alone

    results, alone = asyncio.run(main())
    assert results == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert len(calls) == 2 and len(calls[0]) == 20  # one call for the 10 concurrent submissions
    assert alone == [14]


def test_async_fn_errors_reach_every_caller_and_max_items_splits():
    sizes = []

    async def fail_on_negative(items):
        sizes.append(len(items))
        await asyncio.sleep(0)
        if any(x < 0 for x in items):
            raise ConnectionError("down")
        return items

    async def main():
        b = MicroBatcher(fail_on_negative, max_items=4)
        ok = await asyncio.gather(*(b.submit([i, i]) for i in range(4)))
        with pytest.raises(ConnectionError):
            await asyncio.gather(b.submit([1]), b.submit([-1]))
        return ok

    ok = asyncio.run(main())
    assert ok == [[i, i] for i in range(4)]
    assert sizes[:2] == [4, 4]
