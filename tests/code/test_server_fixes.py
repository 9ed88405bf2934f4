"""serving.server_fixes: BentoML's request timeout without holding each request for the timeout's
length, and the same 504 when a request does take too long."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

from bentoml._internal.server.http import traffic

from serving import server_fixes

CURRENT = contextvars.ContextVar("current_request")


class RequestState:
    """Stands for what a request's context holds (BentoML's tracing span, its send function)."""


async def app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def slow_app(scope, receive, send) -> None:
    await asyncio.sleep(5)


async def one_request(middleware_class, inner=app, timeout: float = 60.0) -> tuple[list, weakref.ref]:
    """One request through the middleware, in its own task whose context holds the request's state
    (as BentoML's tracing middleware sets the current span before calling the next one); the
    messages sent and a weak reference to that state."""
    sent: list = []
    refs: list[weakref.ref] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def handle() -> None:
        state = RequestState()
        refs.append(weakref.ref(state))
        CURRENT.set(state)
        await middleware_class(inner, timeout=timeout)({"type": "http"}, receive, send)

    await asyncio.create_task(handle(), context=contextvars.Context())
    return sent, refs[0]


def state_alive_after_request(middleware_class) -> bool:
    async def scenario() -> bool:
        _, ref = await one_request(middleware_class)
        await asyncio.sleep(0)
        gc.collect()
        return ref() is not None

    return asyncio.run(scenario())


def test_bentoml_timeout_middleware_still_holds_each_request() -> None:
    """The pinned BentoML's middleware keeps the request's context until its timer fires; when an
    upgrade fixes that, this fails and the fix can go."""
    assert state_alive_after_request(server_fixes._ORIGINAL)


def test_fixed_middleware_releases_the_request_when_it_is_answered() -> None:
    assert not state_alive_after_request(server_fixes.TimeoutMiddleware)


def test_fixed_middleware_still_answers_504_after_the_timeout() -> None:
    sent, _ = asyncio.run(one_request(server_fixes.TimeoutMiddleware, inner=slow_app, timeout=0.05))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 504


def test_install_makes_bentoml_build_apps_with_the_fixed_middleware(monkeypatch) -> None:
    monkeypatch.setattr(traffic, "TimeoutMiddleware", server_fixes._ORIGINAL)
    server_fixes.install()
    assert traffic.TimeoutMiddleware is server_fixes.TimeoutMiddleware
