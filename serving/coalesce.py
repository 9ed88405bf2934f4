"""Requests that arrive together are scored together (the service's single-record fast path).

Under concurrent load a worker's event loop holds many requests ready at once; scoring each alone
pays the models' per-call cost (about 1 ms for every champion) once per request. Here each
request's records are queued, and one callback scores every request queued by then in one call
(``Predictor.predict_many``) and answers each. Nothing waits on a timer: when the last call scored a
single request (an idle server) the callback runs on the loop's next turn, so a lone request is
answered microseconds later; when the last call scored several (a loaded server) it runs one turn
later still, which lets the requests whose bytes are arriving in that turn join the batch (at 64
connections this doubled the requests per call, from about 8 to 13-20, and the requests/s by a
third: docs/serving.md). Answers are the same numbers as scoring each request alone (every evaluator
scores each row on its own; tested).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from serving.predictor import Predictor

MAX_BATCH_RECORDS = 512  # one call scores at most this many records; the rest go on the next turn


class Coalescer:
    """Queues requests on the running event loop and scores what is queued in one call per turn."""

    def __init__(self, predictor: Predictor, max_records: int = MAX_BATCH_RECORDS):
        self.predictor = predictor
        self.max_records = max_records
        self.pending: list[tuple[Sequence[Mapping[str, Any]], asyncio.Future]] = []
        self.scheduled = False
        self.calls = 0  # scoring calls made (for tests and the benchmark)
        self.last_batch = 0  # requests scored by the last call

    async def predict(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future = loop.create_future()
        self.pending.append((records, answer))
        if not self.scheduled:
            self.scheduled = True
            if self.last_batch > 1:  # under load: one more turn of the loop lets more requests in
                loop.call_soon(loop.call_soon, self._score_pending)
            else:
                loop.call_soon(self._score_pending)
        return await answer

    def _take(self) -> list[tuple[Sequence[Mapping[str, Any]], asyncio.Future]]:
        """The queued requests up to ``max_records`` records (at least one request)."""
        taken, size = 0, 0
        for records, _ in self.pending:
            if taken and size + len(records) > self.max_records:
                break
            taken += 1
            size += len(records)
        batch, self.pending = self.pending[:taken], self.pending[taken:]
        return batch

    def _score_pending(self) -> None:
        self.scheduled = False
        batch = [(records, answer) for records, answer in self._take() if not answer.cancelled()]
        if self.pending:  # more than one call's worth: the rest on the next turn
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._score_pending)
        if not batch:
            return
        self.calls += 1
        self.last_batch = len(batch)
        try:
            answers = self.predictor.predict_many([records for records, _ in batch])
        except Exception:  # noqa: BLE001 - one request's failure must not fail the others
            answers = [self._alone(records) for records, _ in batch]
            self.calls += len(batch)
        for (_, answer), result in zip(batch, answers, strict=True):
            if answer.done():
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            else:
                answer.set_result(result)

    def _alone(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | Exception:
        try:
            return self.predictor.predict(records)
        except Exception as exc:  # noqa: BLE001 - becomes this request's 500
            return exc
