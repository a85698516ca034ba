"""Versions and aliases through boto3: publish, list, weighted alias routing, qualified deletes."""

import collections

import pytest

from conftest import (
    LAST_MODIFIED,
    UUID,
    function_arn,
    http_status,
    payload_json,
    python_zip,
    sha256_b64,
)


def publish_new_code(lam, name, marker, description=""):
    """Uploads code with `marker` to $LATEST, waits for the update, publishes a version."""
    lam.update_function_code(FunctionName=name, ZipFile=python_zip(marker))
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    return lam.publish_version(FunctionName=name, Description=description)


def test_publish_version_freezes_code_and_lists_versions(lam, create_function):
    name, created = create_function(prefix="ver", marker="one")
    v1 = lam.publish_version(FunctionName=name, Description="first")
    assert http_status(v1) == 201
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == function_arn(name, "1")
    assert v1["Description"] == "first"
    assert v1["CodeSha256"] == created["CodeSha256"]
    assert UUID.match(v1["RevisionId"])
    assert LAST_MODIFIED.match(v1["LastModified"])
    lam.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier="1", WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )

    v2 = publish_new_code(lam, name, "two", "second")
    assert v2["Version"] == "2"
    assert v2["FunctionArn"] == function_arn(name, "2")
    assert v2["CodeSha256"] == sha256_b64(python_zip("two"))
    assert v2["RevisionId"] != v1["RevisionId"], "each version has its own revision"
    lam.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier="2", WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )

    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    by_version = {v["Version"]: v for v in versions}
    assert by_version["1"]["FunctionArn"] == function_arn(name, "1")
    assert by_version["1"]["CodeSha256"] == created["CodeSha256"]
    assert by_version["2"]["Description"] == "second"

    conf1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert (conf1["Version"], conf1["FunctionArn"]) == ("1", function_arn(name, "1"))
    assert conf1["State"] == "Active"
    got1 = lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]
    assert got1["CodeSha256"] == created["CodeSha256"]

    # $LATEST moves on; the published versions do not.
    lam.update_function_code(FunctionName=name, ZipFile=python_zip("three"))
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    assert payload_json(lam.invoke(FunctionName=name, Qualifier="1", Payload=b"{}"))["marker"] == "one"
    assert payload_json(lam.invoke(FunctionName=name, Qualifier="2", Payload=b"{}"))["marker"] == "two"
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "three"

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_configuration(FunctionName=name, Qualifier="9")


def test_aliases_route_by_weight_and_support_crud(lam, create_function):
    name, _ = create_function(prefix="alias", marker="one")
    lam.publish_version(FunctionName=name)
    publish_new_code(lam, name, "two")

    live = lam.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", Description="half and half",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    assert http_status(live) == 201
    assert live["AliasArn"] == function_arn(name, "live")
    assert live["Name"] == "live"
    assert live["FunctionVersion"] == "1"
    assert live["Description"] == "half and half"
    assert live["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    assert UUID.match(live["RevisionId"])

    got = lam.get_alias(FunctionName=name, Name="live")
    for key in ["AliasArn", "Name", "FunctionVersion", "Description", "RoutingConfig", "RevisionId"]:
        assert got[key] == live[key], key

    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")

    executed = collections.Counter()
    for _ in range(30):
        out = lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
        body = payload_json(out)
        executed[out["ExecutedVersion"]] += 1
        assert body["marker"] == {"1": "one", "2": "two"}[out["ExecutedVersion"]]
    assert set(executed) == {"1", "2"}, f"a 50% weight reaches both versions: {executed}"

    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(
            FunctionName=name, Name="live", FunctionVersion="2",
            RevisionId="00000000-0000-0000-0000-000000000000",
        )
    updated = lam.update_alias(
        FunctionName=name, Name="live", FunctionVersion="2",
        RoutingConfig={"AdditionalVersionWeights": {}}, RevisionId=live["RevisionId"],
    )
    assert updated["FunctionVersion"] == "2"
    assert not updated.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    assert updated["RevisionId"] != live["RevisionId"]
    for _ in range(5):
        out = lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
        assert out["ExecutedVersion"] == "2"

    beta = lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="1")
    assert beta["AliasArn"] == function_arn(name, "beta")
    aliases = lam.list_aliases(FunctionName=name)["Aliases"]
    assert sorted(a["Name"] for a in aliases) == ["beta", "live"]
    assert {a["Name"]: a["FunctionVersion"] for a in aliases} == {"beta": "1", "live": "2"}
    only_v2 = lam.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"]
    assert [a["Name"] for a in only_v2] == ["live"]

    deleted = lam.delete_alias(FunctionName=name, Name="live")
    assert http_status(deleted) == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="live")
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["beta"]


def test_delete_function_with_a_qualifier_deletes_one_version(lam, create_function):
    name, _ = create_function(prefix="delver", marker="one")
    lam.publish_version(FunctionName=name)
    publish_new_code(lam, name, "two")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert http_status(e.value) == 409, "an alias still routes to version 1"

    deleted = lam.delete_function(FunctionName=name, Qualifier="2")
    assert http_status(deleted) in (200, 204)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="2")
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    assert payload_json(lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}"))["marker"] == "one"
    assert payload_json(lam.invoke(FunctionName=name, Payload=b"{}"))["marker"] == "two", "$LATEST is untouched"

    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")
