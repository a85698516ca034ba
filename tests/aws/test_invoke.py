"""Invoke through boto3: invocation types, qualifiers and name forms, logs, errors, limits."""

import base64
import json
import time

import pytest

from conftest import ACCOUNT, REGION, function_arn, http_status, payload_json, python_zip


def test_request_response_round_trips_the_payload(lam, create_function):
    name, _ = create_function(prefix="rr")
    event = {"name": "Ada", "nested": {"n": [1, 2, 3]}, "unicode": "h\u00e9llo"}
    out = lam.invoke(FunctionName=name, InvocationType="RequestResponse", Payload=json.dumps(event))
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out
    assert out["ExecutedVersion"] == "$LATEST"
    body = payload_json(out)
    assert body["event"] == event
    assert body["function_name"] == name
    assert body["function_version"] == "$LATEST"
    assert "LogResult" not in out, "no log without LogType=Tail"


def test_an_empty_payload_reaches_the_handler_as_an_empty_object(lam, create_function):
    # Lambda hands the runtime `{}` when Invoke carries no payload (the AWS CLI without
    # --payload, boto3 without Payload).
    name, _ = create_function(prefix="empty")
    out = lam.invoke(FunctionName=name)
    assert "FunctionError" not in out, out["Payload"].read()
    assert payload_json(out)["event"] == {}


def test_a_function_error_is_reported_in_the_header_and_body(lam, create_function):
    name, _ = create_function(prefix="err")
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"fail": "on purpose"}))
    assert out["StatusCode"] == 200, "a failed function still answers 200"
    assert out["FunctionError"] == "Unhandled"
    assert out["ExecutedVersion"] == "$LATEST"
    err = payload_json(out)
    assert err["errorType"] == "ValueError"
    assert "boom: on purpose" in err["errorMessage"]

    ok = lam.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in ok, "the next invocation is not affected"
    assert payload_json(ok)["marker"] == "v1"


def test_tail_returns_the_last_4kb_of_the_log(lam, create_function):
    name, _ = create_function(prefix="tail")
    lines = ["FIRST-LINE-OF-THE-LOG"] + [f"filler {i:04d} " + "x" * 90 for i in range(100)]
    lines.append("LAST-LINE-OF-THE-LOG")
    out = lam.invoke(
        FunctionName=name, LogType="Tail",
        Payload=json.dumps({"print": lines, "stderr": "STDERR-LINE-OF-THE-LOG"}),
    )
    assert out["StatusCode"] == 200
    log = base64.b64decode(out["LogResult"]).decode("utf-8", errors="replace")
    assert len(base64.b64decode(out["LogResult"])) <= 4096
    assert "LAST-LINE-OF-THE-LOG" in log
    assert "STDERR-LINE-OF-THE-LOG" in log, "stderr is part of the log"
    assert "FIRST-LINE-OF-THE-LOG" not in log, "only the tail is returned"

    failed = lam.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps({"fail": "logged"}))
    assert failed["FunctionError"] == "Unhandled"
    assert "boom: logged" in base64.b64decode(failed["LogResult"]).decode("utf-8", "replace")


def test_event_invocations_are_accepted_and_run(lam, native, create_function):
    name, _ = create_function(prefix="event")
    out = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 7}))
    assert out["StatusCode"] == 202
    assert out["Payload"].read() == b""
    assert "FunctionError" not in out
    [record] = native.wait_async_terminal(name)
    assert record["state"] == "SUCCEEDED"
    assert json.loads(record["payload"]) == {"n": 7}
    assert json.loads(record["result"])["event"] == {"n": 7}


def test_dry_run_validates_without_running(lam, native, create_function):
    name, _ = create_function(prefix="dry")
    out = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert out["StatusCode"] == 204
    assert out["Payload"].read() == b""
    time.sleep(1.0)  # sync invocation records are written behind
    assert native.invocations(name) == [], "a dry run runs nothing"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name + "-nope", InvocationType="DryRun")


def test_qualifiers_and_name_forms_resolve_alike(lam, create_function):
    name, _ = create_function(prefix="names", marker="one")
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=python_zip("latest"))
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    partial = f"{ACCOUNT}:function:{name}"
    full = function_arn(name)
    assert full == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"

    cases = [
        # (FunctionName, Qualifier, executed version, marker)
        (name, None, "$LATEST", "latest"),
        (name, "$LATEST", "$LATEST", "latest"),
        (name, "1", "1", "one"),
        (name, "live", "1", "one"),
        (f"{name}:1", None, "1", "one"),
        (f"{name}:live", None, "1", "one"),
        (f"{name}:$LATEST", None, "$LATEST", "latest"),
        (partial, None, "$LATEST", "latest"),
        (f"{partial}:live", None, "1", "one"),
        (partial, "1", "1", "one"),
        (full, None, "$LATEST", "latest"),
        (f"{full}:1", None, "1", "one"),
        (f"{full}:live", None, "1", "one"),
        (full, "live", "1", "one"),
    ]
    for function_name, qualifier, version, marker in cases:
        args = {"FunctionName": function_name, "Payload": b"{}"}
        if qualifier:
            args["Qualifier"] = qualifier
        out = lam.invoke(**args)
        body = payload_json(out)
        assert (out["ExecutedVersion"], body["marker"]) == (version, marker), (function_name, qualifier)
        assert body["function_version"] == version, (function_name, qualifier)

    via_alias = payload_json(lam.invoke(FunctionName=f"{full}:live", Payload=b"{}"))
    assert via_alias["invoked_arn"] == function_arn(name, "live"), "the runtime sees the ARN as invoked"

    for function_name, qualifier in [(name, "7"), (name, "nope"), (f"{name}:nope", None),
                                     (f"{full}:7", None)]:
        args = {"FunctionName": function_name}
        if qualifier:
            args["Qualifier"] = qualifier
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.invoke(**args)

    conf = lam.get_function_configuration(FunctionName=full, Qualifier="1")
    assert conf["FunctionArn"] == function_arn(name, "1"), "the control plane takes ARNs too"
    assert lam.get_function(FunctionName=partial)["Configuration"]["FunctionName"] == name


def test_client_context_reaches_the_runtime(lam, create_function):
    name, _ = create_function(prefix="ctx")
    context = {
        "client": {"installation_id": "inst-1", "app_title": "gust tests", "app_version_name": "1.0",
                   "app_version_code": "1", "app_package_name": "dev.gust.tests"},
        "custom": {"k": "v", "tenant": "t-42"},
        "env": {"locale": "en_US"},
    }
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    body = payload_json(lam.invoke(FunctionName=name, ClientContext=encoded, Payload=b"{}"))
    assert body["client_custom"] == {"k": "v", "tenant": "t-42"}
    plain = payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))
    assert plain["client_custom"] is None, "no client context leaks into the next invocation"


def test_an_oversized_payload_is_request_too_large(lam, create_function):
    name, _ = create_function(prefix="big")
    too_big = b'{"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    with pytest.raises(lam.exceptions.RequestTooLargeException) as e:
        lam.invoke(FunctionName=name, Payload=too_big)
    assert http_status(e.value) == 413

    async_too_big = b'{"pad": "' + b"x" * (1536 * 1024) + b'"}'
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=async_too_big)

    fits = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    out = lam.invoke(FunctionName=name, Payload=fits)
    assert out["StatusCode"] == 200
    assert len(payload_json(out)["event"]["pad"]) == 1024 * 1024, "a 1 MB sync payload is fine"
