"""Progress coalescing: one rate limit per task, the first report at once, the latest wins."""

from __future__ import annotations

import asyncio
from typing import Any

from worker.coalesce import Partial, ProgressCoalescer


def recorder() -> tuple[list[Any], ProgressCoalescer, asyncio.Queue[None]]:
    """What was sent ((stage, fraction), and the partial result after them when there is one),
    the coalescer, and a queue that gets one item per event sent."""
    sent: list[Any] = []
    each: asyncio.Queue[None] = asyncio.Queue()

    async def send(stage: str, fraction: float, partial: Partial | None) -> bool:
        sent.append((stage, fraction) if partial is None else (stage, fraction, partial))
        each.put_nowait(None)
        return True

    return sent, ProgressCoalescer(send, hz=5, on_rejected=lambda: None), each


async def test_a_short_run_sends_only_its_first_report() -> None:
    sent, coalescer, each = recorder()
    for stage in ("load", "analyse", "thumbnail", "turntable"):
        for i in range(1, 101):
            coalescer.update(stage, i / 100)
        await asyncio.sleep(0)  # the pump runs between the child's reports
    await asyncio.wait_for(each.get(), 5)
    await coalescer.close()  # within one interval of the first: the rest is dropped
    assert sent == [("load", 1.0)]  # the newest report when the pump first ran


async def test_stage_changes_share_the_rate_limit_and_the_latest_wins() -> None:
    sent, coalescer, each = recorder()
    coalescer.update("load", 0.5)
    await asyncio.wait_for(each.get(), 5)
    coalescer.update("load", 1.0)
    coalescer.update("analyse", 0.2)
    coalescer.update("thumbnail", 0.7)  # three reports within the interval: one event, the last
    await asyncio.wait_for(each.get(), 5)
    await coalescer.close()
    assert sent == [("load", 0.5), ("thumbnail", 0.7)]


async def test_fractions_are_clamped() -> None:
    sent, coalescer, each = recorder()
    coalescer.update("load", float("nan"))
    await asyncio.wait_for(each.get(), 5)
    coalescer.update("load", 7.0)
    await asyncio.wait_for(each.get(), 5)
    await coalescer.close()
    assert sent == [("load", 0.0), ("load", 1.0)]


async def test_a_refused_event_stops_the_pump_and_says_so() -> None:
    rejected = asyncio.Event()

    async def send(stage: str, fraction: float, partial: Partial | None) -> bool:
        return False

    coalescer = ProgressCoalescer(send, hz=5, on_rejected=rejected.set)
    coalescer.update("load", 0.1)
    coalescer.update("analyse", 0.1)
    await asyncio.wait_for(rejected.wait(), 5)
    await coalescer.close()


async def test_a_partial_result_rides_the_next_report_and_is_never_dropped() -> None:
    sent, coalescer, each = recorder()
    coalescer.update("load", 0.5)
    await asyncio.wait_for(each.get(), 5)
    coalescer.update("thumbnail", 1.0)
    coalescer.partial({"stats": {"faces": 12}, "artifacts": []})
    coalescer.update("web_model", 0.2)  # within the interval: goes out with the partial
    await asyncio.wait_for(each.get(), 5)
    coalescer.partial({"stats": {"faces": 12, "lods": []}, "artifacts": []})
    coalescer.update("turntable", 0.5)
    await coalescer.close()  # still within the interval: sent now, unlike a bare report
    assert sent == [("load", 0.5), ("web_model", 0.2, {"stats": {"faces": 12}, "artifacts": []}),
                    ("turntable", 0.5, {"stats": {"faces": 12, "lods": []}, "artifacts": []})]
