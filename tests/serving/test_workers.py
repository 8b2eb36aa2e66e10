"""The supervisor's workers, started and signalled directly (serving.supervisor)."""
from __future__ import annotations

import http.client
import signal
import time

from serving.supervisor import ServeOptions, listen, start_worker, stop_workers


def test_a_worker_told_to_check_the_config_while_it_starts_up_survives() -> None:
    """check_config_now may signal a worker that has only just been started (a file edit while a dead
    worker is replaced). SIGUSR1's default action would end it; the supervisor starts workers with the
    signal blocked, and a worker unblocks it once its handler is installed."""
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    worker = start_worker(listener, ServeOptions(host="127.0.0.1", port=port, workers=1))
    try:
        worker.send_signal(signal.SIGUSR1)  # long before the interpreter has even started
        time.sleep(0.3)
        worker.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 60
        answered = False
        while not answered and time.monotonic() < deadline and worker.poll() is None:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                client.request("GET", "/health")
                answered = client.getresponse().status > 0
            except OSError:
                time.sleep(0.1)
            finally:
                client.close()
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        assert answered
        worker.send_signal(signal.SIGUSR1)  # and once it serves, too
        time.sleep(0.3)
        assert worker.poll() is None
    finally:
        stop_workers([worker])
        listener.close()
