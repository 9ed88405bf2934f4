"""Two fixes to how a BentoML worker holds memory, applied by ``serving.service`` at import.

Both were found by load testing (docs/serving.md, "Tail latency"): under a closed loop of 64
connections, BentoML 1.4's worker paused for 50-170 ms every ~0.7 s, and the pauses grew with the
request count. The pauses were Python's full (generation 2) garbage collections:

1. **Requests kept alive for ``traffic.timeout`` seconds.** BentoML's ``TimeoutMiddleware`` schedules
   ``loop.call_later(timeout, ...)`` for every request and never cancels the handle, so each
   request's future, send function, scope and tracing span (about 30 objects) stay reachable until
   the timer fires (120 s here): at 1,000 requests/s that is millions of live objects, and every full
   collection walks them all. ``TimeoutMiddleware`` below is the same middleware (same 504 answer,
   same timeout) that cancels its timer when the request is done.
2. **The models and libraries walked by every full collection.** After the champions are loaded the
   worker holds ~100,000 long-lived objects that will never be garbage; ``freeze_loaded_objects``
   moves them to the permanent generation (``gc.freeze``), as CPython's documentation recommends for
   pre-loaded servers, so a collection only walks what requests create.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bentoml._internal.server.http import traffic

_ORIGINAL = traffic.TimeoutMiddleware


class TimeoutMiddleware(_ORIGINAL):
    """BentoML's request timeout (a 504 after ``timeout`` seconds) that releases its timer when the
    request finishes."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            try:
                await waiter
            except TimeoutError:
                if task.cancel():
                    from starlette.responses import JSONResponse

                    answer = JSONResponse(
                        {"error": f"Not able to process the request in {self.timeout} seconds"},
                        status_code=504,
                    )
                    await answer(scope, receive, send)
            else:
                await task
        finally:
            timer.cancel()  # a cancelled handle drops its callback and arguments: the request is freed


def install() -> None:
    """Make BentoML build its apps with the fixed middleware (it imports the class when it builds
    each worker's app, after the service module is imported)."""
    traffic.TimeoutMiddleware = TimeoutMiddleware


def freeze_loaded_objects() -> None:
    """Collect once, then exempt everything alive now (libraries, models) from later collections."""
    gc.collect()
    gc.freeze()
