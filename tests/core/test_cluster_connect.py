"""Joining a cluster: a Ray Client session whose server dies at start is tried again (Ray hands out
its per-session ports from one range, and two clusters on one machine can collide); every other
failure is answered at once. A stand-in for the `ray` module records the calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from batchlens.core.cluster import connect as joining
from batchlens.core.errors import BatchLensError


class FakeRay:
    def __init__(self, failures: list[Exception]):
        self.failures = list(failures)
        self.calls = 0
        self.exceptions = SimpleNamespace(RayError=type("RayError", (Exception,), {}))

    def is_initialized(self) -> bool:
        return False

    def init(self, address: str, **options) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(joining, "check_reachable", lambda *args: None)
    monkeypatch.setattr(joining, "describe", lambda ray, requested, started_here: requested)
    monkeypatch.setattr(joining.time, "sleep", lambda seconds: None)


def server_died() -> RuntimeError:
    return RuntimeError(
        "Starting Ray client server failed. See ray_client_server_23000.err for detailed logs."
    )


def test_a_client_server_that_died_at_start_is_tried_again():
    ray = FakeRay([server_died(), server_died()])
    assert joining.connect(ray, "ray://head:10001") == "ray://head:10001"
    assert ray.calls == 3


def test_it_gives_up_after_three_tries_with_one_sentence():
    ray = FakeRay([server_died()] * 3)
    with pytest.raises(BatchLensError) as caught:
        joining.connect(ray, "ray://head:10001")
    assert ray.calls == 3 and "\n" not in str(caught.value)


def test_other_failures_are_answered_at_once():
    ray = FakeRay([ConnectionError("Authentication required")])
    with pytest.raises(BatchLensError):
        joining.connect(ray, "ray://head:10001")
    assert ray.calls == 1
