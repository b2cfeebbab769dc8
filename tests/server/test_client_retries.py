"""The clients' retry rule (``shardwalk.client._Backoff``, shared by Client and AsyncClient):
reads that find the server UNAVAILABLE are tried again up to ``retries`` times, writes and
other failures are not, and what is not retried raises the library's class."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

import shardwalk
from shardwalk import client as client_module
from shardwalk.errors import InvalidArgumentError, UnavailableError


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"{self._code.name} on purpose"


class Stub:
    """Fails each call with the next of ``failures``, then answers."""

    def __init__(self, failures: list[grpc.StatusCode], asynchronous: bool) -> None:
        self.failures = failures
        self.calls = 0
        self.asynchronous = asynchronous

    def __getattr__(self, method: str) -> Any:
        def answer(request: object, **_: object) -> str:
            self.calls += 1
            if self.failures:
                raise Failure(self.failures.pop(0))
            return "answer"

        async def answer_async(request: object, **kwargs: object) -> str:
            return answer(request, **kwargs)

        return answer_async if self.asynchronous else answer


def call(model: str, failures: list[grpc.StatusCode], idempotent: bool, retries: int) -> Stub:
    """One call through a client of ``model`` whose stub fails with ``failures``."""
    cls = shardwalk.Client if model == "sync" else shardwalk.AsyncClient
    stub = Stub(failures, asynchronous=model == "async")

    async def run() -> object:
        client = cls("127.0.0.1:1", retries=retries, connect_timeout=0)
        client._connected = True
        client._stub = stub
        result = client._run("Stats", object(), lambda response: response, idempotent)
        return await result if model == "async" else result

    assert asyncio.run(run()) == "answer"
    return stub


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []

    async def asleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(client_module.time, "sleep", pauses.append)
    monkeypatch.setattr(client_module.asyncio, "sleep", asleep)
    return pauses


@pytest.mark.parametrize("model", ["sync", "async"])
def test_a_read_is_retried_while_unavailable(model: str, no_pauses: list[float]) -> None:
    stub = call(model, [grpc.StatusCode.UNAVAILABLE] * 3, idempotent=True, retries=3)
    assert stub.calls == 4
    assert len(no_pauses) == 3
    # 0.1 s doubling, each with jitter in [0.5, 1.5)
    for pause, delay in zip(no_pauses, (0.1, 0.2, 0.4), strict=True):
        assert 0.5 * delay <= pause < 1.5 * delay


@pytest.mark.parametrize("model", ["sync", "async"])
def test_retries_run_out_with_the_library_error(model: str) -> None:
    with pytest.raises(UnavailableError, match=r"server 127\.0\.0\.1:1 unavailable"):
        call(model, [grpc.StatusCode.UNAVAILABLE] * 3, idempotent=True, retries=2)


@pytest.mark.parametrize("model", ["sync", "async"])
def test_a_write_is_not_retried(model: str) -> None:
    with pytest.raises(UnavailableError):
        call(model, [grpc.StatusCode.UNAVAILABLE], idempotent=False, retries=4)


@pytest.mark.parametrize("model", ["sync", "async"])
def test_other_failures_are_not_retried(model: str) -> None:
    with pytest.raises(InvalidArgumentError, match="INVALID_ARGUMENT on purpose") as caught:
        call(model, [grpc.StatusCode.INVALID_ARGUMENT], idempotent=True, retries=4)
    assert caught.value.__suppress_context__  # the gRPC error is not chained
