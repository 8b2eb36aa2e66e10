"""The ASGI application: the one way every request is served.

An invocation (`/endpoints/<name>/invocations`, `/gateway/<name>/invocations`, `/v1/chat/completions`,
`/v1/completions`, `/v1/embeddings`), `GET /health` (load balancers poll it) and `GET /metrics`
(Prometheus scrapes it: observability.metrics) go straight to their
view (serving.views), run in the async bridge (serving.bridge) on the worker's event loop. They skip
URL resolution, the middleware stack (sessions, auth, messages, CSRF: none of which an invocation
uses), the request signals and Django's request and response objects (serving.http); measured, these
were about half the CPU of a mock invocation (see bench/README.md). What the middleware would do for
them is done here (serving.http.Security): the host check (ALLOWED_HOSTS) and Django's
SecurityMiddleware (the SECURE_* settings: HTTPS redirect, HSTS, nosniff, referrer and
cross-origin-opener policies). Every other request (the admin, the management
API, the docs) goes to Django's ASGI handler unchanged; a worker that serves only invocations never
imports DRF (about 50 MB of memory per worker).

The same application runs under start_server's workers, `manage.py runserver` and the tests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings

from observability import metrics, reports, tracing
from providers.errors import GatewayError
from serving import counters, invoke, runtime
from serving import views as invocations
from serving.bridge import await_, run_sync
from serving.edge import declared_length, error_body, too_large_message
from serving.http import Request, Response, Security, json_response
from serving.routes import match_invocation
from usage import ledger

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]
View = Callable[[Request], Response]

_V1_VIEWS: dict[str, View] = {
    "chat/completions": invocations.openai_chat,
    "completions": invocations.openai_completions,
    "embeddings": invocations.openai_embeddings,
}


def find_view(path: str) -> View | None:
    """The view for an invocation or health-check path (any method: the view answers 405 itself),
    or None for everything Django routes."""
    if path == "/health":
        return invocations.health
    if path == "/metrics":
        return metrics.view
    view = _views.get(path)
    if view is not None:
        return view
    match = match_invocation(path)
    if match is None:
        return None
    name, v1 = match
    view = _V1_VIEWS[v1] if name is None else functools.partial(invocations.endpoint_invocations, name=name)
    if len(_views) >= 1024:  # paths come from clients: the cache stays small whatever they send
        _views.clear()
    _views[path] = view
    return view


_views: dict[str, View] = {}  # the invocation paths called lately, and their view


_security: Security | None = None


def respond(view: View, request: Request) -> Response:
    """Run a view as Django's middleware would guard it: the host check, the SECURE_* settings,
    and a JSON 500 for a crash."""
    global _security
    security = _security
    if security is None:
        security = _security = Security()  # reads the settings once, as Django's middleware does
    request_id = request.request_id = invoke.request_id(request.header("x-request-id"))
    if not security.host_allowed(request):
        response = json_response({"detail": "Bad Request: the Host header is not allowed."}, 400)
    else:
        try:
            response = security.redirect_to_https(request) or view(request)
        except Exception:
            logger.exception("invocation failed: %s (request %s)", request.path, request_id)
            response = json_response({"detail": "Internal Server Error"}, 500)
    response["X-Request-Id"] = request_id
    security.add_headers(request, response)
    return response


class GatewayApplication:
    """The ASGI application start_server's workers run: the invocation views in front of Django's
    ASGI handler.

    An invocation runs in the async bridge (serving.bridge): a synchronous view whose upstream I/O,
    Redis calls and sleeps await on this worker's event loop. An SSE stream is pulled one chunk at a
    time and each chunk is sent as it comes, so a held stream costs a suspended greenlet and a socket,
    not a thread. Everything else goes to Django's ASGI handler, which runs the (synchronous) admin and
    API views in its thread as usual."""

    def __init__(self, django_app: ASGIApp) -> None:
        self.django_app = django_app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            view = find_view(scope["path"])
            if view is not None:
                await self._serve(view, scope, receive, send)
                return
            await _serve_django(self.django_app, scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self.django_app(scope, receive, send)

    async def _serve(self, view: View, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        size = declared_length(scope["headers"])
        too_large = size is not None and size > limit
        body: bytes | None = b""
        if not too_large:
            try:
                body = await _read_body(receive, limit)
            except _BodyTooLarge as exc:
                too_large, size = True, exc.size
        if too_large:
            # The view refuses it (413, in the route's error shape) from the length alone, as for any request;
            # the rest of the body is never read: the connection closes after the answer.
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(size).encode())]}
            body = b""
        if body is None:
            return  # the client went away before sending its whole request
        response = await _run_view(view, Request(scope, body), receive)
        if response is None:
            return  # the client went away while the view waited on its upstream
        if too_large:
            response["Connection"] = "close"
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": response.raw_headers()})
            if response.stream is None:
                await send({"type": "http.response.body", "body": response.body})
                return
            await _pass_stream(response, receive, send)
        finally:
            if response.after is not None:
                # At the loop's next step: after the other answers that are ready now, which need not wait
                # for this one's accounting.
                asyncio.get_running_loop().call_soon(_after_answer, response.after, response.get("X-Request-Id"))


def _after_answer(after: Callable[[], None], request_id: str | None) -> None:
    try:
        after()
    except Exception:
        logger.exception("accounting for an answer failed (request %s)", request_id or "-")


STOPPING_MESSAGE = "The server is shutting down; retry the request."

# A view still running after this long starts listening for its client's disconnect. Most answers come
# sooner, and pay nothing for it: a timer, not a task per request.
WATCH_FOR_DISCONNECT_AFTER_SECONDS = 1.0


async def _run_view(view: View, request: Request, receive: Receive) -> Response | None:
    """Run the view in the async bridge; None if the client went away before it answered. Then the
    view is cancelled where it waits (the upstream call, whose connection is closed), so a long
    completion nobody will read stops holding the worker and the vendor's connection. Streams have
    their own watcher (_pass_stream)."""
    task = asyncio.current_task()
    assert task is not None
    watcher: asyncio.Future[None] | None = None

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, task))

    timer = asyncio.get_running_loop().call_later(WATCH_FOR_DISCONNECT_AFTER_SECONDS, start_watching)
    try:
        return await run_sync(respond, view, request)
    except asyncio.CancelledError:
        task.uncancel()
        if watcher is None or not _client_left(watcher):
            # The server is stopping and its grace period is over (uvicorn cancels what is still running).
            logger.warning("the server stopped before the answer: %s cancelled (request %s)", request.path,
                           request.request_id or "-")
            response = json_response({"detail": STOPPING_MESSAGE}, 503)
            response["Connection"] = "close"
            return response
        logger.info("client went away before the answer: %s cancelled", request.path)
        return None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _pass_stream(response: Response, receive: Receive, send: Send) -> None:
    """Send a stream; if the client goes away first, stop it, which closes the upstream stream (no
    tokens are generated and paid for that nobody reads). uvicorn's send() drops data for a gone
    client silently: only receive() says so."""
    pump = asyncio.ensure_future(run_sync(_send_stream, response, send))
    watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, pump))
    try:
        await pump
    except asyncio.CancelledError:
        if _client_left(watcher):
            return
        # The server is stopping and its grace period is over: the stream is cut, and says so (a client must
        # not take a cut stream for a complete one).
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        logger.warning("the server stopped during a stream: cut (request %s)", response.get("X-Request-Id", "-"))
        error = GatewayError(STOPPING_MESSAGE, status=503, code="server_shutting_down")
        await send({"type": "http.response.body", "body": invocations.error_event(error), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(receive: Receive, target: asyncio.Future[Any]) -> None:
    """Wait for the client's http.disconnect, then cancel `target`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    target.cancel()


def _client_left(watcher: asyncio.Future[None]) -> bool:
    """Whether a _cancel_on_disconnect watcher saw the client go (it ended on its own)."""
    return watcher.done() and not watcher.cancelled()


def _send_stream(response: Response, send: Send) -> None:
    """Pass a streaming response on chunk by chunk, in one greenlet for the whole stream: each upstream
    read and each send waits on the event loop."""
    assert response.stream is not None
    try:
        for index, chunk in enumerate(response.stream):
            await_(send({"type": "http.response.body", "body": chunk, "more_body": True}))
            if index == 0:
                # The worker's transport sends what one loop step wrote at the end of that step
                # (serving.worker): let the head and the first event leave now, not with the
                # events that arrived together with it.
                await_(asyncio.sleep(0))
        await_(send({"type": "http.response.body", "body": b""}))
    finally:
        # Ends the provider's generator, so an upstream stream the client abandoned is closed too.
        response.close()


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None if the client went away; _BodyTooLarge as soon as it passes the
    size limit (nothing more is read)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(size)
        parts.append(chunk)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


class _LimitedReceive:
    """A request's receive() that stops at the body size limit: past it, Django's handler (which spools the
    whole body to a temporary file before routing) is told the client went away."""

    __slots__ = ("exceeded", "left", "receive")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.left = limit
        self.exceeded = False

    async def __call__(self) -> Mapping[str, Any]:
        message = await self.receive()
        if message["type"] == "http.request":
            self.left -= len(message.get("body", b""))
            if self.left < 0:
                self.exceeded = True
                return {"type": "http.disconnect"}
        return message


async def _serve_django(django_app: ASGIApp, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Django's handler, with the body size limit of every route: a declared Content-Length over it is
    refused before any of the body is read, a chunked body as soon as it passes it (413, JSON)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    size = declared_length(scope["headers"])
    if size is not None and size > limit:
        await _refuse_too_large(scope, send, limit)
        return
    limited = _LimitedReceive(receive, limit)
    await django_app(scope, limited, send)
    if limited.exceeded:  # Django stopped reading and answered nothing
        await _refuse_too_large(scope, send, limit)


async def _refuse_too_large(scope: dict[str, Any], send: Send, limit: int) -> None:
    body = error_body(scope["path"], 413, too_large_message(limit), "request_too_large")
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Startup builds the endpoint table, so a worker's first request does not wait for it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await asyncio.to_thread(runtime.load_table)
            except Exception:  # the database may be down: the first request retries, /health reports it
                logger.exception("endpoint table cannot be loaded at start-up")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # The counts being sent and the usage records still buffered are written before the worker
            # exits (SIGTERM).
            await counters.settle()
            reports.flush()  # the metrics and access lines of the last invocations
            await asyncio.to_thread(ledger.get().close)
            await asyncio.to_thread(tracing.shutdown)  # the spans still in the batch
            await send({"type": "lifespan.shutdown.complete"})
            return
