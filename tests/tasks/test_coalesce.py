"""Progress coalescing: a burst of updates becomes a few events; stage changes always go out."""

from __future__ import annotations

from tasks.coalesce import ProgressCoalescer


async def test_a_burst_within_one_stage_becomes_first_and_last() -> None:
    sent: list[tuple[str, float]] = []

    async def send(stage: str, fraction: float) -> bool:
        sent.append((stage, fraction))
        return True

    coalescer = ProgressCoalescer(send, hz=5, on_rejected=lambda: None)
    for i in range(1, 1001):
        coalescer.update("load", i / 1000)
    await coalescer.close()
    assert sent == [("load", 0.001), ("load", 1.0)]


async def test_stage_changes_are_never_dropped() -> None:
    sent: list[tuple[str, float]] = []

    async def send(stage: str, fraction: float) -> bool:
        sent.append((stage, fraction))
        return True

    coalescer = ProgressCoalescer(send, hz=5, on_rejected=lambda: None)
    for stage in ("open", "analyse", "thumbnail"):
        for i in range(1, 101):
            coalescer.update(stage, i / 100)
    await coalescer.close()
    stages = [s for s, _ in sent]
    assert stages == ["open", "open", "analyse", "analyse", "thumbnail", "thumbnail"]
    assert sent[1] == ("open", 1.0) and sent[-1] == ("thumbnail", 1.0)


async def test_a_refused_event_stops_the_pump_and_says_so() -> None:
    rejected: list[bool] = []

    async def send(stage: str, fraction: float) -> bool:
        return False

    coalescer = ProgressCoalescer(send, hz=5, on_rejected=lambda: rejected.append(True))
    coalescer.update("load", 0.1)
    coalescer.update("analyse", 0.1)
    await coalescer.close()
    assert rejected == [True]
