"""The benchmark's fake upstream keeps its stated delays: PreciseTimer (bench/fake_upstream.py)."""
from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "bench" / "fake_upstream.py"
_spec = importlib.util.spec_from_file_location("bench_fake_upstream", _PATH)
assert _spec is not None and _spec.loader is not None
fake_upstream = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fake_upstream
_spec.loader.exec_module(fake_upstream)


def test_callbacks_fire_in_deadline_order_and_never_early() -> None:
    async def main() -> list[tuple[str, float, float]]:
        loop = asyncio.get_running_loop()
        timer = fake_upstream.PreciseTimer(loop)
        fired: list[tuple[str, float, float]] = []
        done = asyncio.Event()

        def schedule(name: str, delay: float) -> None:
            deadline = time.monotonic() + delay

            def callback() -> None:
                fired.append((name, deadline, time.monotonic()))
                if len(fired) == 4:
                    done.set()

            timer.call_later(delay, callback)

        # Scheduled out of order: a later deadline first, then earlier ones that must re-arm the timer.
        schedule("c", 0.030)
        schedule("a", 0.0105)
        schedule("b", 0.0202)
        schedule("b2", 0.0204)  # due within the same millisecond as b: still its own deadline
        if timer._fd >= 0:  # Linux: the one timer is armed for the earliest deadline
            assert timer._armed_for == min(deadline for deadline, _, _ in timer._due)
        await asyncio.wait_for(done.wait(), 5)
        return fired

    fired = asyncio.run(main())
    assert [name for name, _, _ in fired] == ["a", "b", "b2", "c"]
    for name, deadline, at in fired:
        assert at >= deadline, f"{name} fired {1000 * (deadline - at):.3f} ms early"
