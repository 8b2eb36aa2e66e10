"""A live gateway for tests: the ASGI application under uvicorn in a thread, as a worker runs it."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.test.utils import modify_settings

from serving.worker import GatewayHttpToolsProtocol


class LiveGateway:
    """`url` is the server's base URL. Static files are served from the apps (no collectstatic)."""

    def __init__(self) -> None:
        from gateway_project.asgi import application

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = int(listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(ASGIStaticFilesHandler(application), loop="uvloop", http=GatewayHttpToolsProtocol,
                                ws="none", lifespan="on", access_log=False, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listener]},
                                       name="live-gateway", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live gateway did not start")
            time.sleep(0.02)
        # pytest-django's live-server helper enables and disables this around each test.
        self._live_server_modified_settings = modify_settings(ALLOWED_HOSTS={"append": "127.0.0.1"})

    def __str__(self) -> str:
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
