"""serving.coalesce: requests that arrive together are scored in one call, each gets its own answer,
a lone request is not held back, and one request's failure does not fail the others."""

from __future__ import annotations

import asyncio

import pytest

from serving.coalesce import Coalescer


class FakePredictor:
    """Answers each record with its value doubled; records with value None make the call fail."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []  # records per request of each call

    def _answer(self, records) -> dict:
        if any(r["value"] is None for r in records):
            raise ValueError("bad record")
        return {"predictions": [2 * r["value"] for r in records]}

    def predict(self, records) -> dict:
        self.calls.append([len(records)])
        return self._answer(records)

    def predict_many(self, requests) -> list[dict]:
        self.calls.append([len(r) for r in requests])
        answers = [self._answer(r) for r in requests]  # all or nothing, like one scoring pass
        return answers


def requests_of(*sizes: int, start: int = 0) -> list[list[dict]]:
    out, value = [], start
    for size in sizes:
        out.append([{"value": value + i} for i in range(size)])
        value += size
    return out


def run_together(coalescer: Coalescer, requests: list[list[dict]]) -> list:
    async def scenario() -> list:
        return await asyncio.gather(*(coalescer.predict(r) for r in requests), return_exceptions=True)

    return asyncio.run(scenario())


def test_requests_waiting_together_are_scored_in_one_call_with_their_own_answers() -> None:
    predictor = FakePredictor()
    requests = requests_of(1, 1, 3, 1, 2)
    answers = run_together(Coalescer(predictor), requests)
    assert predictor.calls == [[1, 1, 3, 1, 2]]
    assert answers == [{"predictions": [2 * r["value"] for r in request]} for request in requests]


def test_a_lone_request_is_scored_on_the_next_turn_of_the_loop() -> None:
    predictor = FakePredictor()
    coalescer = Coalescer(predictor)

    async def scenario() -> dict:
        task = asyncio.ensure_future(coalescer.predict([{"value": 4}]))
        # turns of the loop: the request queues itself, the scoring callback runs, the request resumes
        for _ in range(3):
            await asyncio.sleep(0)
        assert task.done()  # no timer: answered within three turns of the loop
        return task.result()

    assert asyncio.run(scenario()) == {"predictions": [8]}
    assert predictor.calls == [[1]]


def test_a_call_takes_at_most_max_records_and_the_rest_follow() -> None:
    predictor = FakePredictor()
    requests = requests_of(3, 3, 3, 3)
    answers = run_together(Coalescer(predictor, max_records=7), requests)
    assert predictor.calls == [[3, 3], [3, 3]]
    assert [a["predictions"] for a in answers] == [[2 * r["value"] for r in q] for q in requests]


def test_one_failing_request_does_not_fail_the_others() -> None:
    predictor = FakePredictor()
    requests = requests_of(2, 1, 2)
    requests[1] = [{"value": None}]
    answers = run_together(Coalescer(predictor), requests)
    assert isinstance(answers[1], ValueError)
    assert answers[0] == {"predictions": [0, 2]}
    assert answers[2] == {"predictions": [6, 8]}


@pytest.mark.parametrize("size", [1, 5])
def test_calls_are_counted(size: int) -> None:
    coalescer = Coalescer(FakePredictor())
    run_together(coalescer, requests_of(*([1] * size)))
    assert coalescer.calls == 1


def test_under_load_requests_one_turn_apart_join_the_same_call() -> None:
    """After a call that scored several requests the next call waits one more turn of the loop; after
    a lone request it does not."""
    predictor = FakePredictor()
    coalescer = Coalescer(predictor)

    async def two_waves() -> list:
        first = asyncio.ensure_future(coalescer.predict([{"value": 1}]))
        await asyncio.sleep(0)  # the first request queues itself and schedules the scoring
        second = asyncio.ensure_future(coalescer.predict([{"value": 2}]))
        return await asyncio.gather(first, second)

    async def scenario() -> None:
        await two_waves()  # idle: the first request is scored alone, the second after it
        assert predictor.calls == [[1], [1]]
        await asyncio.gather(*(coalescer.predict([{"value": v}]) for v in (3, 4)))  # a loaded turn
        assert predictor.calls[-1] == [1, 1]
        await two_waves()  # loaded: the two waves share one call
        assert predictor.calls[-1] == [1, 1]
        assert len(predictor.calls) == 4

    asyncio.run(scenario())
