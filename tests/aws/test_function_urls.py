"""Function URL configs through boto3 (Create/Get/Update/Delete/ListFunctionUrlConfigs), and
calls to the URLs themselves: a NONE URL anyone may call, and an AWS_IAM URL that takes a
request signed with SigV4 by botocore, as the AWS docs show for calling IAM-protected URLs."""

import json
import re
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from conftest import (ACCESS_KEY, PYTHON_RUNTIME, REGION, ROLE, SECRET_KEY, error_code,
                      function_arn, python_zip, unique)

URL_ID = re.compile(r"/url/([a-z0-9]{32})/$|^https?://([a-z0-9]{32})\.")


@pytest.fixture
def function(lam):
    name = unique("url")
    lam.create_function(
        FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
        Code={"ZipFile": python_zip("url")}, Timeout=30,
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    yield name
    try:
        lam.delete_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        pass


def call(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_url_configs_have_lambdas_shapes_and_errors(lam, function):
    created = lam.create_function_url_config(
        FunctionName=function, AuthType="NONE",
        Cors={"AllowOrigins": ["https://app.example.com"], "AllowMethods": ["GET"], "MaxAge": 300},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionArn"] == function_arn(function)
    assert created["AuthType"] == "NONE"
    assert created["InvokeMode"] == "BUFFERED"
    assert created["Cors"]["AllowOrigins"] == ["https://app.example.com"]
    assert URL_ID.search(created["FunctionUrl"]), created["FunctionUrl"]

    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function_url_config(FunctionName=function, AuthType="NONE")
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.create_function_url_config(FunctionName=function, AuthType="SOMETIMES", Qualifier="live")
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=function, Qualifier="nosuchalias")

    got = lam.get_function_url_config(FunctionName=function)
    assert got["FunctionUrl"] == created["FunctionUrl"]
    assert "LastModifiedTime" in got and "CreationTime" in got

    updated = lam.update_function_url_config(FunctionName=function, AuthType="AWS_IAM")
    assert updated["AuthType"] == "AWS_IAM"
    assert updated["Cors"]["AllowOrigins"] == ["https://app.example.com"], "what is not given stays"
    assert updated["FunctionUrl"] == created["FunctionUrl"]

    version = lam.publish_version(FunctionName=function)["Version"]
    lam.create_alias(FunctionName=function, Name="live", FunctionVersion=version)
    on_alias = lam.create_function_url_config(FunctionName=function, Qualifier="live", AuthType="NONE")
    assert on_alias["FunctionArn"] == function_arn(function, "live")
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.create_function_url_config(FunctionName=function, Qualifier=version, AuthType="NONE")
    assert error_code(e) == "InvalidParameterValueException"

    listed = lam.list_function_url_configs(FunctionName=function)["FunctionUrlConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == sorted([function_arn(function), function_arn(function, "live")])
    first = lam.list_function_url_configs(FunctionName=function, MaxItems=1)
    assert len(first["FunctionUrlConfigs"]) == 1 and first["NextMarker"]
    rest = lam.list_function_url_configs(FunctionName=function, Marker=first["NextMarker"])
    assert len(rest["FunctionUrlConfigs"]) == 1 and "NextMarker" not in rest

    lam.delete_function_url_config(FunctionName=function, Qualifier="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_url_config(FunctionName=function, Qualifier="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_function_url_configs(FunctionName=unique("absent"))


def test_a_none_url_is_called_with_lambdas_http_event(lam, function):
    url = lam.create_function_url_config(FunctionName=function, AuthType="NONE")["FunctionUrl"]
    status, headers, body = call(url + "orders/17?expand=items", method="POST", body=b'{"qty": 2}',
                                 headers={"Content-Type": "application/json"})
    assert status == 200, body
    answer = json.loads(body)
    event = answer["event"]
    assert answer["function_version"] == "$LATEST"
    assert event["rawPath"] == "/orders/17"
    assert event["queryStringParameters"] == {"expand": "items"}
    assert event["requestContext"]["http"]["method"] == "POST"
    assert json.loads(event["body"]) == {"qty": 2}
    assert headers["x-amz-executed-version"] == "$LATEST"


def test_an_aws_iam_url_takes_a_sigv4_signed_request(lam, function):
    url = lam.create_function_url_config(FunctionName=function, AuthType="AWS_IAM")["FunctionUrl"]
    status, _, _ = call(url)
    assert status == 403, "unsigned"

    def signed(secret):
        request = botocore.awsrequest.AWSRequest(method="GET", url=url + "me", headers={})
        creds = botocore.credentials.Credentials(ACCESS_KEY, secret)
        botocore.auth.SigV4Auth(creds, "lambda", REGION).add_auth(request)
        return call(url + "me", headers=dict(request.headers))

    status, _, _ = signed("not-the-secret")
    assert status == 403, "a bad signature"
    status, _, body = signed(SECRET_KEY)
    assert status == 200, body
    event = json.loads(body)["event"]
    assert event["rawPath"] == "/me"
    assert event["requestContext"]["authorizer"]["iam"]["callerId"]


def test_invoke_with_response_stream_answers_in_events(lam, function):
    resp = lam.invoke_with_response_stream(FunctionName=function, Payload=json.dumps({"n": 1}), LogType="Tail")
    assert resp["StatusCode"] == 200
    chunks, complete = [], None
    for event in resp["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append(event["PayloadChunk"]["Payload"])
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    assert json.loads(b"".join(chunks))["event"] == {"n": 1}
    assert complete is not None and "ErrorCode" not in complete
    assert "END RequestId" in __import__("base64").b64decode(complete["LogResult"]).decode()

    failed = lam.invoke_with_response_stream(FunctionName=function, Payload=json.dumps({"fail": "x"}))
    ends = [e["InvokeComplete"] for e in failed["EventStream"] if "InvokeComplete" in e]
    assert ends and ends[0]["ErrorCode"] == "Unhandled"
    assert "boom: x" in ends[0]["ErrorDetails"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName=unique("absent"), Payload=b"{}")
