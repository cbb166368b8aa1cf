"""Loop and Runtime with fake passes: stop, wake, failures, lanes, started work, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog.testing

from relay.core.loops import Loop
from relay.core.runtime import Runtime
from tests.helpers import wait_for

# Far longer than any test: only wake() or stop() can end an idle wait.
NEVER_S = 3600.0


class FakeLoop(Loop):
    """A loop whose pass is a function the test supplies; counts passes and releases."""

    name = "fake"

    def __init__(
        self, run_pass: Callable[[FakeLoop], Awaitable[int]], *, idle_s: float = NEVER_S
    ) -> None:
        super().__init__(idle_s)
        self._pass = run_pass
        self.passes = 0
        self.released = 0

    async def run_pass(self) -> int:
        self.passes += 1
        return await self._pass(self)

    async def release(self) -> None:
        self.released += 1


async def nothing_due(loop: FakeLoop) -> int:
    return 0


def passes_reached(loop: FakeLoop, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return loop.passes >= count

    return check


async def test_stop_ends_an_idle_loop_at_once() -> None:
    loop = FakeLoop(nothing_due)
    running = asyncio.create_task(loop.run())
    await wait_for(passes_reached(loop, 1))

    loop.stop()
    await asyncio.wait_for(running, timeout=5)
    assert loop.passes == 1


async def test_wake_starts_the_next_pass_before_the_interval() -> None:
    loop = FakeLoop(nothing_due)
    running = asyncio.create_task(loop.run())
    await wait_for(passes_reached(loop, 1))

    loop.wake()
    await wait_for(passes_reached(loop, 2))
    loop.stop()
    await asyncio.wait_for(running, timeout=5)


async def test_a_pass_that_does_work_is_followed_by_another_without_idling() -> None:
    async def busy_twice(loop: FakeLoop) -> int:
        return 1 if loop.passes <= 2 else 0

    loop = FakeLoop(busy_twice)
    running = asyncio.create_task(loop.run())
    await wait_for(passes_reached(loop, 3))  # no wake(): busy passes do not wait
    loop.stop()
    await asyncio.wait_for(running, timeout=5)


async def test_a_pass_that_raises_is_logged_and_retried() -> None:
    async def fails_first(loop: FakeLoop) -> int:
        if loop.passes == 1:
            raise RuntimeError("database blip")
        return 0

    loop = FakeLoop(fails_first, idle_s=0.01)
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(loop.run())
        await wait_for(passes_reached(loop, 2))
        loop.stop()
        await asyncio.wait_for(running, timeout=5)
    failures = [e for e in logs if e["event"] == "loop_pass_failed"]
    assert len(failures) == 1 and failures[0]["loop"] == "fake"


async def test_lanes_run_passes_concurrently() -> None:
    in_pass = 0
    most = 0
    all_in = asyncio.Event()

    async def overlapping(loop: FakeLoop) -> int:
        nonlocal in_pass, most
        in_pass += 1
        most = max(most, in_pass)
        if in_pass == loop.lanes:
            all_in.set()
        await all_in.wait()  # only returns once every lane is inside a pass at once
        in_pass -= 1
        return 0

    loop = FakeLoop(overlapping)
    loop.lanes = 3
    running = asyncio.create_task(loop.run())
    await asyncio.wait_for(all_in.wait(), timeout=5)
    loop.stop()
    await asyncio.wait_for(running, timeout=5)
    assert most == 3


async def test_started_work_does_not_hold_up_the_next_pass_and_is_awaited_on_stop() -> None:
    finish = asyncio.Event()
    finished: list[int] = []

    async def work(n: int) -> None:
        await finish.wait()
        finished.append(n)

    async def starts_work(loop: FakeLoop) -> int:
        if loop.passes <= 2:
            loop.start_work(work(loop.passes), name=f"work-{loop.passes}")
            return 1
        return 0

    loop = FakeLoop(starts_work)
    running = asyncio.create_task(loop.run())
    await wait_for(passes_reached(loop, 3))  # passes went on while work 1 and 2 wait
    assert finished == []

    loop.stop()
    done, _ = await asyncio.wait({running}, timeout=0.2)
    assert not done  # run() waits for the work in flight
    finish.set()
    await asyncio.wait_for(running, timeout=5)
    assert sorted(finished) == [1, 2]


async def test_run_once_awaits_the_work_its_pass_started() -> None:
    finished: list[str] = []

    async def work() -> None:
        await asyncio.sleep(0)
        finished.append("done")

    async def starts_work(loop: FakeLoop) -> int:
        loop.start_work(work(), name="work")
        return 1

    loop = FakeLoop(starts_work)
    assert await loop.run_once() == 1
    assert finished == ["done"]


async def test_failed_work_is_logged_and_wakes_the_loop() -> None:
    async def broken() -> None:
        raise RuntimeError("bug in the work")

    async def starts_broken_work_once(loop: FakeLoop) -> int:
        if loop.passes == 1:
            loop.start_work(broken(), name="broken-work")
        return 0

    loop = FakeLoop(starts_broken_work_once)
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(loop.run())
        await wait_for(passes_reached(loop, 2))  # woken by the work ending, not the interval
        loop.stop()
        await asyncio.wait_for(running, timeout=5)
    (failure,) = [e for e in logs if e["event"] == "loop_work_failed"]
    assert failure["work"] == "broken-work"


async def test_side_task_runs_while_the_loop_runs_and_is_cancelled_after() -> None:
    side_started = asyncio.Event()
    side_cancelled = asyncio.Event()

    class WithSideTask(FakeLoop):
        async def side_task(self) -> None:
            side_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                side_cancelled.set()
                raise

    loop = WithSideTask(nothing_due)
    running = asyncio.create_task(loop.run())
    await asyncio.wait_for(side_started.wait(), timeout=5)
    assert not side_cancelled.is_set()
    loop.stop()
    await asyncio.wait_for(running, timeout=5)
    assert side_cancelled.is_set()


async def test_runtime_notices_a_dying_loop_and_calls_on_fatal() -> None:
    class Dies(FakeLoop):
        name = "dies"

        async def run(self) -> None:
            raise RuntimeError("the loop itself broke")

    healthy, dying = FakeLoop(nothing_due), Dies(nothing_due)
    runtime = Runtime({"healthy": healthy, "dies": dying}, active={"healthy", "dies"}, grace_s=5)
    fatal: list[str] = []
    runtime.on_fatal = fatal.append
    with structlog.testing.capture_logs() as logs:
        runtime.start()

        async def fatal_reported() -> list[str]:
            return fatal

        await wait_for(fatal_reported)
        await runtime.stop()
    assert fatal == ["relay-dies"]
    assert any(e["event"] == "loop_died" and e["loop"] == "relay-dies" for e in logs)


async def test_runtime_starts_only_active_loops() -> None:
    active, inactive = FakeLoop(nothing_due), FakeLoop(nothing_due)
    runtime = Runtime({"on": active, "off": inactive}, active={"on"}, grace_s=5)
    runtime.start()
    await wait_for(passes_reached(active, 1))
    await runtime.stop()
    assert inactive.passes == 0
    assert (active.released, inactive.released) == (1, 0)


async def test_runtime_stop_waits_the_grace_then_cancels_and_releases() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def never_finishes(loop: FakeLoop) -> int:
        entered.set()
        try:
            await asyncio.Event().wait()  # in-flight work that outlives the grace
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    stuck, prompt = FakeLoop(never_finishes), FakeLoop(nothing_due)
    runtime = Runtime({"stuck": stuck, "prompt": prompt}, active={"stuck", "prompt"}, grace_s=0.2)
    fatal: list[str] = []
    runtime.on_fatal = fatal.append
    runtime.start()
    await asyncio.wait_for(entered.wait(), timeout=5)
    await wait_for(passes_reached(prompt, 1))

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(runtime.stop(), timeout=10)
    assert cancelled.is_set()
    assert [e["loop"] for e in logs if e["event"] == "loop_cancelled_after_grace"] == [
        "relay-stuck"
    ]
    assert (stuck.released, prompt.released) == (1, 1)
    assert fatal == []  # a loop stopped by the runtime is not a death


async def test_a_database_outage_is_logged_once_not_a_traceback_per_pass() -> None:
    outage = 5

    async def database_down_then_up(loop: FakeLoop) -> int:
        if loop.passes <= outage:
            raise ConnectionRefusedError(111, "Connection refused")
        return 0

    loop = FakeLoop(database_down_then_up, idle_s=0.001)
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(loop.run())
        await wait_for(passes_reached(loop, outage + 2))
        loop.stop()
        await asyncio.wait_for(running, timeout=5)
    events = [entry["event"] for entry in logs if entry["event"].startswith("loop_")]
    assert events.count("loop_database_unavailable") == 1
    assert events.count("loop_database_available") == 1
    assert "loop_pass_failed" not in events
    assert not any("exc_info" in entry for entry in logs)
