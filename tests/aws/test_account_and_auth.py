"""GetAccountSettings, and SigV4 authentication of the AWS API."""

import datetime
import json
from unittest import mock

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from conftest import NATIVE_TOKEN, SECRET_KEY, client, http_status, payload_json, unique


def all_functions(lam):
    return [f for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]


def test_get_account_settings(lam, create_function):
    before = lam.get_account_settings()
    limit, usage = before["AccountLimit"], before["AccountUsage"]
    assert limit["ConcurrentExecutions"] > 0
    assert 0 <= limit["UnreservedConcurrentExecutions"] <= limit["ConcurrentExecutions"]
    assert limit["CodeSizeZipped"] > 0 and limit["CodeSizeUnzipped"] > 0
    assert usage["FunctionCount"] == len(all_functions(lam))

    _, created = create_function(prefix="acct")
    after = lam.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == usage["FunctionCount"] + 1
    assert after["TotalCodeSize"] >= created["CodeSize"]


def test_a_wrong_secret_is_an_invalid_signature(create_function):
    name, _ = create_function(prefix="sig")
    bad = client(secret_key=SECRET_KEY + "-wrong")
    with pytest.raises(ClientError) as e:
        bad.get_function(FunctionName=name)
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert http_status(e.value) == 403
    with pytest.raises(ClientError) as e:
        bad.invoke(FunctionName=name, Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_an_unknown_key_id_is_an_unrecognized_client(lam, create_function):
    name, _ = create_function(prefix="keyid")
    stranger = client(access_key="AKIDNOTKNOWNTOGUST", secret_key=SECRET_KEY)
    with pytest.raises(ClientError) as e:
        stranger.get_function(FunctionName=name)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert http_status(e.value) == 403
    other = unique("stranger")
    with pytest.raises(ClientError) as e:
        stranger.create_function(
            FunctionName=other, Runtime="python3.11", Role="arn:aws:iam::000000000000:role/x",
            Handler="app.handler", Code={"ZipFile": b"PK"},
        )
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=other)


def test_unsigned_requests_are_refused(create_function):
    name, _ = create_function(prefix="unsigned")
    anonymous = client(signature_version=UNSIGNED)
    with pytest.raises(ClientError) as e:
        anonymous.get_function(FunctionName=name)
    assert http_status(e.value) in (401, 403), e.value.response


def test_the_signature_covers_the_payload(lam, create_function):
    name, _ = create_function(prefix="tamper")
    tampering = client()

    def tamper(request, **_):
        # After signing: same length, different bytes.
        body = request.body if isinstance(request.body, bytes) else request.body.encode()
        assert b'"amount": 1' in body
        request.body = body.replace(b'"amount": 1', b'"amount": 9')

    tampering.meta.events.register("before-send.lambda.Invoke", tamper)
    with pytest.raises(ClientError) as e:
        tampering.invoke(FunctionName=name, Payload=json.dumps({"amount": 1}))
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert http_status(e.value) == 403
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"amount": 1}))
    assert payload_json(out)["event"] == {"amount": 1}, "the same request, untampered, passes"


def test_an_old_signature_is_refused(lam, create_function):
    # SigV4 requests are valid for 15 minutes around their X-Amz-Date (no replay of old ones).
    name, _ = create_function(prefix="stale")
    stale = client()
    when = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=30)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        with pytest.raises(ClientError) as e:
            stale.get_function(FunctionName=name)
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert http_status(e.value) == 403
    assert stale.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


def test_the_native_token_signs_as_key_id_gust(create_function):
    # `gust server --help`: "the --token also signs as access key id `gust`".
    name, _ = create_function(prefix="tokenkey")
    native_key = client(access_key="gust", secret_key=NATIVE_TOKEN)
    assert native_key.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
