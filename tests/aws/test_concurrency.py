"""Reserved concurrency through boto3: the settings, and throttling that is really enforced.

The shared client makes one attempt per call (conftest.client), so a 429 reaches the test
instead of being retried by botocore."""

import json
import threading

import pytest

from conftest import http_status, payload_json

REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_put_get_delete_function_concurrency(lam, create_function):
    name, _ = create_function(prefix="conc")
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)

    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert put["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5

    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 3

    deleted = lam.delete_function_concurrency(FunctionName=name)
    assert http_status(deleted) == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)

    for call in [
        lambda: lam.put_function_concurrency(FunctionName=name + "-no", ReservedConcurrentExecutions=1),
        lambda: lam.get_function_concurrency(FunctionName=name + "-no"),
        lambda: lam.delete_function_concurrency(FunctionName=name + "-no"),
    ]:
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            call()


def test_reserved_concurrency_one_throttles_concurrent_invokes(lam, create_function):
    name, _ = create_function(prefix="throttle")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    # Warm the environment first, so the concurrent invokes below overlap in the handler.
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "v1"

    results, lock = [], threading.Lock()
    start = threading.Barrier(4)

    def call(i):
        start.wait()
        try:
            out = lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 5, "i": i}))
            outcome = ("ok", out["StatusCode"], payload_json(out)["event"]["i"])
        except lam.exceptions.TooManyRequestsException as e:
            outcome = ("throttled", http_status(e), e.response.get("Reason"))
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ok = [r for r in results if r[0] == "ok"]
    throttled = [r for r in results if r[0] == "throttled"]
    assert len(ok) == 1, f"exactly one invoke fits in reserved concurrency 1: {results}"
    assert ok[0][1] == 200
    assert len(throttled) == 3, results
    assert all(r[1:] == (429, REASON) for r in throttled), throttled

    # The slot is free again once the running invocation finished.
    assert lam.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200


def test_reserved_concurrency_zero_throttles_every_sync_invoke(lam, create_function):
    name, _ = create_function(prefix="zero")
    lam.publish_version(FunctionName=name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for qualifier in [None, "$LATEST", "1"]:
        args = {"FunctionName": name, "Payload": b"{}"}
        if qualifier:
            args["Qualifier"] = qualifier
        with pytest.raises(lam.exceptions.TooManyRequestsException) as e:
            lam.invoke(**args)
        assert http_status(e.value) == 429
        assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert e.value.response.get("Reason") == REASON

    lam.delete_function_concurrency(FunctionName=name)
    out = lam.invoke(FunctionName=name, Payload=b"{}")
    assert out["StatusCode"] == 200
    assert payload_json(out)["marker"] == "v1"
