"""Function lifecycle through boto3: create, read, update, delete, list, and the waiters."""

import pytest
from botocore.exceptions import WaiterError

from conftest import (
    LAST_MODIFIED,
    PYTHON_RUNTIME,
    ROLE,
    UUID,
    function_arn,
    http_status,
    payload_json,
    python_zip,
    sha256_b64,
    unique,
)


def test_create_function_returns_its_configuration_and_becomes_active(lam, create_function):
    code = python_zip("create")
    name, created = create_function(
        prefix="create",
        wait=False,
        Code={"ZipFile": code},
        Description="made by boto3",
        MemorySize=256,
        Timeout=12,
        Environment={"Variables": {"GUST_T_A": "1"}},
    )
    assert http_status(created) == 201
    assert created["FunctionName"] == name
    assert created["FunctionArn"] == function_arn(name)
    assert created["Runtime"] == PYTHON_RUNTIME
    assert created["Handler"] == "app.handler"
    assert created["Role"] == ROLE
    assert created["Description"] == "made by boto3"
    assert created["MemorySize"] == 256
    assert created["Timeout"] == 12
    assert created["Environment"] == {"Variables": {"GUST_T_A": "1"}}
    assert created["Version"] == "$LATEST"
    assert created["CodeSize"] == len(code)
    assert created["CodeSha256"] == sha256_b64(code), "base64 of the zip's SHA-256"
    assert UUID.match(created["RevisionId"]), created["RevisionId"]
    assert LAST_MODIFIED.match(created["LastModified"]), created["LastModified"]
    assert created["State"] == "Pending"

    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    got = lam.get_function(FunctionName=name)
    conf = got["Configuration"]
    assert conf["State"] == "Active"
    assert conf["LastUpdateStatus"] == "Successful"
    for key in ["FunctionName", "FunctionArn", "Runtime", "Handler", "Role", "Description",
                "MemorySize", "Timeout", "Environment", "CodeSize", "CodeSha256", "Version"]:
        assert conf[key] == created[key], key

    config = lam.get_function_configuration(FunctionName=name)
    assert config["FunctionArn"] == function_arn(name)
    assert config["CodeSha256"] == sha256_b64(code)
    assert config["MemorySize"] == 256
    assert config["State"] == "Active"

    out = lam.invoke(FunctionName=name, Payload=b'{"x": 1}')
    body = payload_json(out)
    assert body["marker"] == "create"
    assert body["env"] == {"GUST_T_A": "1"}
    assert body["function_name"] == name
    assert body["memory"] == "256"


def test_creating_an_existing_name_is_a_conflict(lam, create_function):
    name, _ = create_function(prefix="dup")
    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        lam.create_function(
            FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
            Code={"ZipFile": python_zip("other")},
        )
    assert http_status(e.value) == 409
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "v1", "the original is intact"


def test_out_of_range_memory_is_an_invalid_parameter(lam, create_function):
    name = unique("mem")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_function(
            FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
            Code={"ZipFile": python_zip()}, MemorySize=100000,
        )
    assert http_status(e.value) == 400
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)

    name, _ = create_function(prefix="mem")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, MemorySize=100000)
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 128


def test_a_missing_function_is_resource_not_found_everywhere(lam):
    name = unique("missing")
    calls = [
        lambda: lam.get_function(FunctionName=name),
        lambda: lam.get_function_configuration(FunctionName=name),
        lambda: lam.invoke(FunctionName=name, Payload=b"{}"),
        lambda: lam.update_function_configuration(FunctionName=name, Timeout=5),
        lambda: lam.update_function_code(FunctionName=name, ZipFile=python_zip()),
        lambda: lam.publish_version(FunctionName=name),
        lambda: lam.list_versions_by_function(FunctionName=name),
        lambda: lam.list_aliases(FunctionName=name),
        lambda: lam.delete_function(FunctionName=name),
    ]
    for call in calls:
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
            call()
        assert http_status(e.value) == 404
        assert e.value.response["Error"]["Message"], "the error carries a message"


def test_update_function_code_changes_the_code_that_runs(lam, create_function):
    name, created = create_function(prefix="code", marker="one")
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "one"

    new_code = python_zip("two")
    with pytest.raises(lam.exceptions.PreconditionFailedException) as e:
        lam.update_function_code(
            FunctionName=name, ZipFile=new_code, RevisionId="00000000-0000-0000-0000-000000000000"
        )
    assert http_status(e.value) == 412
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "one", "a refused update changes nothing"

    revision = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    updated = lam.update_function_code(FunctionName=name, ZipFile=new_code, RevisionId=revision)
    assert updated["CodeSha256"] == sha256_b64(new_code)
    assert updated["CodeSize"] == len(new_code)
    assert updated["CodeSha256"] != created["CodeSha256"]
    assert updated["RevisionId"] != revision
    assert updated["Version"] == "$LATEST"
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    conf = lam.get_function(FunctionName=name)["Configuration"]
    assert conf["LastUpdateStatus"] == "Successful"
    assert conf["CodeSha256"] == sha256_b64(new_code)
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "two", "the new code runs"


def test_update_function_configuration_replaces_settings(lam, create_function):
    name, created = create_function(
        prefix="conf", Environment={"Variables": {"GUST_T_A": "1", "GUST_T_B": "2"}}
    )
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["env"] == {"GUST_T_A": "1", "GUST_T_B": "2"}

    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_configuration(
            FunctionName=name, Timeout=9, RevisionId="00000000-0000-0000-0000-000000000000"
        )

    updated = lam.update_function_configuration(
        FunctionName=name,
        Environment={"Variables": {"GUST_T_C": "3"}},
        Timeout=20,
        MemorySize=512,
        Description="reconfigured",
        RevisionId=lam.get_function_configuration(FunctionName=name)["RevisionId"],
    )
    assert updated["Timeout"] == 20
    assert updated["MemorySize"] == 512
    assert updated["Description"] == "reconfigured"
    assert updated["Environment"] == {"Variables": {"GUST_T_C": "3"}}, "the map is replaced whole"
    assert updated["CodeSha256"] == created["CodeSha256"], "the code is untouched"
    assert updated["RevisionId"] != created["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    conf = lam.get_function_configuration(FunctionName=name)
    assert (conf["Timeout"], conf["MemorySize"], conf["Description"]) == (20, 512, "reconfigured")
    assert conf["LastUpdateStatus"] == "Successful"

    body = payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))
    assert body["env"] == {"GUST_T_C": "3"}, "a warm environment does not keep the old config"
    assert body["memory"] == "512"


def test_delete_function_removes_it_and_frees_the_name(lam, create_function):
    name, _ = create_function(prefix="del")
    deleted = lam.delete_function(FunctionName=name)
    assert http_status(deleted) in (200, 204)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name)

    again = lam.create_function(
        FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
        Code={"ZipFile": python_zip("reborn")}, Timeout=30,
    )
    assert http_status(again) == 201
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "reborn"


def test_list_functions_pages_with_markers(lam, create_function):
    names = {create_function(prefix="list", wait=False)[0] for _ in range(3)}

    first = lam.list_functions(MaxItems=1)
    assert len(first["Functions"]) == 1
    assert first.get("NextMarker"), "more functions exist, so there is a next marker"

    paginator = lam.get_paginator("list_functions")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 1}))
    assert all(len(p["Functions"]) <= 1 for p in pages), "MaxItems=1 is honoured"
    assert all(p.get("NextMarker") for p in pages[:-1])
    seen = [f["FunctionName"] for p in pages for f in p["Functions"]]
    assert len(seen) == len(set(seen)), f"no function is listed twice: {seen}"
    assert names <= set(seen), f"all three are listed: {names - set(seen)}"
    assert len(pages) >= 3

    everything = [f for p in paginator.paginate() for f in p["Functions"]]
    assert sorted(f["FunctionName"] for f in everything) == sorted(seen)
    mine = [f for f in everything if f["FunctionName"] in names]
    for f in mine:
        assert f["FunctionArn"] == function_arn(f["FunctionName"])
        assert f["Runtime"] == PYTHON_RUNTIME
        assert f["Version"] == "$LATEST"


def test_function_exists_waiter(lam, create_function):
    name, _ = create_function(prefix="exists", wait=False)
    lam.get_waiter("function_exists").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    with pytest.raises(WaiterError):
        lam.get_waiter("function_exists").wait(
            FunctionName=unique("never"), WaiterConfig={"Delay": 1, "MaxAttempts": 2}
        )
