"""A slow SSE reader during an event storm (RELIABILITY C2): its mailbox overflows, the server cuts
it off, and it resumes losslessly with Last-Event-ID; a fast reader of the same session is not
affected; neither ever misses the terminal event."""

from __future__ import annotations

from tests.chaos.outcomes import finished
from tests.chaos.processes import Processes
from tests.chaos.recorder import small_receive_buffer
from tests.chaos.session import GRADIENT, Session
from tests.helpers.pipelines import STORM_STAGES

STORMY = {"texture": "tests.helpers.pipelines:storm"}
SSE_QUEUE = 32
RECEIVE_BUFFER = 64 * 1024
"""The slow client's SO_RCVBUF: small enough that its stall reaches the server soon, big enough
that it reads at full speed once it resumes (a few KiB would crawl at a window per delayed ACK)."""


async def test_a_slow_reader_is_cut_off_and_resumes_losslessly(processes: Processes,
                                                              redis_url: str) -> None:
    # no rate limit to speak of: every report the worker has when it can send one goes out
    web = processes.serve(pipelines=STORMY, env={
        "KILN_SSE_QUEUE": str(SSE_QUEUE), "KILN_EVENT_LOG_MAX": str(4 * STORM_STAGES),
        "KILN_PROGRESS_HZ": "1000000"})
    await web.ready()
    session = await Session.open(web.url, redis_url)
    try:
        fast = session.recorder().start()
        slow = session.recorder(socket_options=small_receive_buffer(RECEIVE_BUFFER))
        slow.pause()  # it reads one event, then nothing until told
        slow.start()
        await slow.until(lambda h: bool(h.connections) and h.connections[0].status == 200, 10,
                         "the slow reader's stream")
        (tid,) = await session.upload(("storm.png", GRADIENT))
        fast.expect([tid])
        slow.expect([tid])
        await fast.until(finished(tid), 40, "the storm's end on the fast stream")
        cut = slow.history.connections[0]
        slow.resume()
        await slow.until_done(20)
        await fast.stop()

        await session.check(fast)
        await session.check(slow)
        events = len(fast.history.task_events(tid))
        # most reports go out one by one (the worker may fold a few into one when it lags)
        assert events >= STORM_STAGES // 2, f"only {events} events: the storm was coalesced away"
        assert len(fast.history.connections) == 1, "the fast reader was cut off too"
        assert cut.ended == "closed by the server", f"the slow reader was not cut off: {cut}"
        assert len(slow.history.connections) >= 2
        assert slow.history.terminal(tid) == fast.history.terminal(tid)
    finally:
        await session.close()
