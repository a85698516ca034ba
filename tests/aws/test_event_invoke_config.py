"""Event-invoke configuration through boto3: the settings, retries that are really honoured,
and destinations (other gust functions) receiving Lambda's v1.0 invocation record.

What happened to an async invocation is read through gust's native API (conftest.Native):
its attempts, and what the destination function was invoked with."""

import datetime
import json
import re
import time

import pytest

from conftest import function_arn, http_status

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def assert_recent(ts):
    assert isinstance(ts, datetime.datetime), f"LastModified is a timestamp: {ts!r}"
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - ts).total_seconds()) < 600, f"LastModified {ts} is not now ({now})"


def test_put_get_update_delete_event_invoke_config(lam, create_function):
    name, _ = create_function(prefix="eic")
    _, dest = create_function(prefix="eic-dest")
    dest_arn = dest["FunctionArn"]

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)

    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": dest_arn}},
    )
    assert put["FunctionArn"] in (function_arn(name), function_arn(name, "$LATEST"))
    assert put["MaximumRetryAttempts"] == 1
    assert put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"]["OnFailure"] == {"Destination": dest_arn}
    assert not put["DestinationConfig"].get("OnSuccess", {}).get("Destination")
    assert_recent(put["LastModified"])

    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumRetryAttempts"] == 1
    assert got["MaximumEventAgeInSeconds"] == 120
    assert got["DestinationConfig"]["OnFailure"] == {"Destination": dest_arn}
    assert_recent(got["LastModified"])
    latest = lam.get_function_event_invoke_config(FunctionName=name, Qualifier="$LATEST")
    assert latest["MaximumRetryAttempts"] == 1, "the unqualified function is $LATEST"

    # Update merges: what it does not name is kept.
    updated = lam.update_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=300,
        DestinationConfig={"OnSuccess": {"Destination": dest_arn}},
    )
    assert updated["MaximumRetryAttempts"] == 1
    assert updated["MaximumEventAgeInSeconds"] == 300
    assert updated["DestinationConfig"]["OnSuccess"] == {"Destination": dest_arn}
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert (got["MaximumRetryAttempts"], got["MaximumEventAgeInSeconds"]) == (1, 300)
    assert got["DestinationConfig"]["OnSuccess"] == {"Destination": dest_arn}

    # Put overwrites: what it does not name is removed (back to the defaults).
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert put["MaximumRetryAttempts"] == 0
    assert put.get("MaximumEventAgeInSeconds") in (None, 21600)
    dests = put.get("DestinationConfig", {})
    assert not dests.get("OnSuccess", {}).get("Destination")
    assert not dests.get("OnFailure", {}).get("Destination")

    deleted = lam.delete_function_event_invoke_config(FunctionName=name)
    assert http_status(deleted) in (200, 204)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName=name + "-no", MaximumRetryAttempts=0)


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_a_failing_async_invocation_is_retried_as_configured(lam, native, create_function, retries):
    name, _ = create_function(prefix=f"retry{retries}")
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=retries)
    started = time.monotonic()
    out = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"fail": "always"}))
    assert out["StatusCode"] == 202
    [record] = native.wait_async_terminal(name, timeout=90)
    elapsed = time.monotonic() - started
    assert record["state"] == "FAILED", record
    assert record["attempts"] == retries + 1, f"1 attempt + {retries} retries: {record}"
    assert record["function_errors"] == retries + 1, record
    # gust waits 1 s before the first retry and 2 s before the second.
    assert elapsed >= {0: 0, 1: 0.9, 2: 2.9}[retries], elapsed

    time.sleep(1.5)
    again = native.invocation(record["invocation_id"])
    assert (again["state"], again["attempts"]) == ("FAILED", retries + 1), "nothing ran afterwards"
    assert len([i for i in native.invocations(name) if i["mode"] == "async"]) == 1


def destination_records(native, dest, count=1, timeout=90):
    """The events the destination function was invoked with (it echoes them), oldest first."""
    records = native.wait_async_terminal(dest, count=count, timeout=timeout)
    for r in records:
        assert r["state"] == "SUCCEEDED", r
    return [json.loads(r["payload"]) for r in records]


def test_on_failure_destination_gets_the_invocation_record(lam, native, create_function):
    dest, _ = create_function(prefix="onfail-dest")
    name, _ = create_function(prefix="onfail")
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": function_arn(dest)}},
    )
    # Sync invocations never go to destinations.
    assert lam.invoke(FunctionName=name, Payload=json.dumps({"fail": "sync"}))["FunctionError"]

    event = {"fail": "async", "order": 17}
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event))
    [source] = native.wait_async_terminal(name, timeout=90)
    assert (source["state"], source["attempts"]) == ("FAILED", 2)
    [rec] = destination_records(native, dest)

    assert rec["version"] == "1.0"
    assert TIMESTAMP.match(rec["timestamp"]), rec["timestamp"]
    ctx = rec["requestContext"]
    assert ctx["condition"] == "RetriesExhausted"
    assert ctx["approximateInvokeCount"] == 2
    assert ctx["functionArn"] == function_arn(name, "$LATEST")
    assert isinstance(ctx["requestId"], str) and ctx["requestId"]
    assert rec["requestPayload"] == event
    assert rec["responseContext"]["statusCode"] == 200
    assert rec["responseContext"]["executedVersion"] == "$LATEST"
    assert rec["responseContext"]["functionError"] == "Unhandled"
    assert rec["responsePayload"]["errorType"] == "ValueError"
    assert "boom: async" in rec["responsePayload"]["errorMessage"]

    time.sleep(1.0)
    assert len(native.invocations(dest)) == 1, "exactly one record, none for the sync failure"


def test_on_success_destination_gets_the_invocation_record(lam, native, create_function):
    dest, _ = create_function(prefix="onok-dest")
    failure_dest, _ = create_function(prefix="onok-fdest")
    name, _ = create_function(prefix="onok", marker="source")
    lam.put_function_event_invoke_config(
        FunctionName=name,
        DestinationConfig={
            "OnSuccess": {"Destination": function_arn(dest)},
            "OnFailure": {"Destination": function_arn(failure_dest)},
        },
    )
    assert lam.invoke(FunctionName=name, Payload=b'{"sync": true}')["StatusCode"] == 200

    event = {"order": 18, "items": ["a", "b"]}
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event))
    [source] = native.wait_async_terminal(name)
    assert (source["state"], source["attempts"]) == ("SUCCEEDED", 1)
    [rec] = destination_records(native, dest)

    assert rec["version"] == "1.0"
    assert TIMESTAMP.match(rec["timestamp"]), rec["timestamp"]
    ctx = rec["requestContext"]
    assert ctx["condition"] == "Success"
    assert ctx["approximateInvokeCount"] == 1
    assert ctx["functionArn"] == function_arn(name, "$LATEST")
    assert rec["requestPayload"] == event
    assert rec["responseContext"]["statusCode"] == 200
    assert rec["responseContext"]["executedVersion"] == "$LATEST"
    assert "functionError" not in rec["responseContext"]
    assert rec["responsePayload"]["marker"] == "source"
    assert rec["responsePayload"]["event"] == event
    assert rec["responsePayload"] == json.loads(source["result"])

    time.sleep(1.0)
    assert len(native.invocations(dest)) == 1, "one record, none for the sync invocation"
    assert native.invocations(failure_dest) == [], "a success goes only to OnSuccess"


def test_maximum_event_age_expires_a_waiting_event(lam, native, create_function):
    # The slowest test (about a minute: 60 s is the smallest age the API accepts). Reserved
    # concurrency 1 and a long-running first event keep the second one waiting until it is too old.
    dest, _ = create_function(prefix="age-dest")
    name, _ = create_function(prefix="age", Timeout=120)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=60, MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": function_arn(dest)}},
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"sleep": 80, "which": "A"}))
    native.wait_for(name, lambda items: any(i["state"] == "RUNNING" for i in items), what="a running event")
    started = time.monotonic()
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"which": "B"}))

    [rec] = destination_records(native, dest, timeout=120)
    waited = time.monotonic() - started
    assert 55 <= waited < 100, f"the event expired after {waited:.0f} s, not after about 60 s"
    assert rec["version"] == "1.0"
    assert rec["requestContext"]["condition"] == "EventAgeExceeded"
    assert rec["requestContext"]["functionArn"] == function_arn(name, "$LATEST")
    assert rec["requestPayload"] == {"which": "B"}

    items = native.invocations(name)
    states = {json.loads(native.invocation(i["invocation_id"])["payload"])["which"]: i for i in items}
    assert states["B"]["state"] == "EXPIRED", states["B"]
    assert states["B"]["function_errors"] == 0, "the expired event never ran"
    assert states["A"]["state"] == "RUNNING", "the first event was still running all along"
