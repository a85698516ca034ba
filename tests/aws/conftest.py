"""Shared fixtures of the AWS-client suite: gust's AWS Lambda API driven by boto3 and the AWS CLI.

The suite runs against a `gust server` started by crates/gust/tests/aws_clients.rs (or by hand)
and reads where it is from the environment:

    GUST_AWS_ENDPOINT      http://127.0.0.1:PORT (the AWS and the native API share the listener)
    AWS_ACCESS_KEY_ID      a key id the server knows (--aws-credential KEYID:SECRET)
    AWS_SECRET_ACCESS_KEY  its secret
    AWS_DEFAULT_REGION     us-east-1
    GUST_NATIVE_TOKEN      the server's --token, for gust's native /v1 API (used to observe
                           invocations that the Lambda API does not expose)

Every test makes its own uniquely named functions and deletes them afterwards, so the tests
are independent of each other and of their order.
"""

import base64
import hashlib
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
import zipfile

import boto3
import pytest
from botocore.config import Config

# The Node suite (tests/aws/node) has its own runner; its node_modules holds no Python tests.
collect_ignore = ["node"]

REQUIRED_ENV = [
    "GUST_AWS_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "GUST_NATIVE_TOKEN",
]
_missing = [k for k in REQUIRED_ENV if not os.environ.get(k)]
if _missing:
    raise pytest.UsageError(
        "the AWS-client suite needs a running gust server; missing environment: "
        + ", ".join(_missing)
        + " (crates/gust/tests/aws_clients.rs sets them)"
    )

ENDPOINT = os.environ["GUST_AWS_ENDPOINT"].rstrip("/")
REGION = os.environ["AWS_DEFAULT_REGION"]
ACCESS_KEY = os.environ["AWS_ACCESS_KEY_ID"]
SECRET_KEY = os.environ["AWS_SECRET_ACCESS_KEY"]
NATIVE_TOKEN = os.environ["GUST_NATIVE_TOKEN"]

ACCOUNT = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/gust-test"
PYTHON_RUNTIME = "python3.11"
# FunctionConfiguration.LastModified: a string such as 2026-11-27T01:12:04.000+0000.
LAST_MODIFIED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# The one Python handler every test deploys. MARKER is replaced per package, so a test can tell
# which code ran; the event chooses what the handler does.
APP = '''
import os
import sys
import time

MARKER = "__MARKER__"

def handler(event, context):
    if not isinstance(event, dict):
        event = {"value": event}
    for line in event.get("print", []):
        print(line, flush=True)
    if event.get("stderr"):
        print(event["stderr"], file=sys.stderr, flush=True)
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    if event.get("fail"):
        raise ValueError("boom: " + str(event["fail"]))
    cc = context.client_context
    return {
        "marker": MARKER,
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
        "memory": str(context.memory_limit_in_mb),
        "env": {k: v for k, v in os.environ.items() if k.startswith("GUST_T_")},
        "client_custom": cc.custom if cc is not None else None,
    }
'''


def function_arn(name, qualifier=None):
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_zip(files):
    """A zip package of {path: (bytes, unix mode)}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, (data, mode) in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def python_zip(marker="v1"):
    return make_zip({"app.py": (APP.replace("__MARKER__", marker).encode(), 0o644)})


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def payload_json(resp):
    """The parsed body of an Invoke response (its StreamingBody read once)."""
    body = resp["Payload"].read()
    return json.loads(body) if body else None


def client(access_key=ACCESS_KEY, secret_key=SECRET_KEY, **config):
    """A Lambda client on gust. One attempt per call (no SDK retries): every assertion sees
    exactly what the server answered, and a throttled or slow invoke is not sent again."""
    cfg = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=20,
        **config,
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    )
    return session.client("lambda", endpoint_url=ENDPOINT, config=cfg)


def sqs_client(access_key=ACCESS_KEY, secret_key=SECRET_KEY, **config):
    """An SQS client on gust (AWS JSON 1.0), one attempt per call."""
    cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60, **config)
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    )
    return session.client("sqs", endpoint_url=ENDPOINT, config=cfg)


def scheduler_client(access_key=ACCESS_KEY, secret_key=SECRET_KEY, **config):
    """An EventBridge Scheduler client on gust (rest-json), one attempt per call."""
    cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60, **config)
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    )
    return session.client("scheduler", endpoint_url=ENDPOINT, config=cfg)


def error_code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def http_status(resp_or_exc):
    resp = getattr(resp_or_exc, "response", resp_or_exc)
    return resp["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="session")
def lam():
    return client()


class Native:
    """gust's native /v1 API, to observe what the Lambda API does not show (async attempts,
    destination deliveries)."""

    def request(self, method, path):
        req = urllib.request.Request(
            ENDPOINT + path, method=method, headers={"Authorization": f"Bearer {NATIVE_TOKEN}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def invocations(self, name):
        status, body = self.request("GET", f"/v1/functions/{name}/invocations?limit=100")
        assert status == 200, (status, body)
        return body["invocations"]

    def invocation(self, invocation_id):
        status, body = self.request("GET", f"/v1/invocations/{invocation_id}")
        assert status == 200, (status, body)
        return body

    def wait_for(self, name, predicate, timeout=60.0, what="invocations"):
        """Polls the function's invocations until predicate(list) is true; returns the list."""
        deadline = time.monotonic() + timeout
        while True:
            items = self.invocations(name)
            if predicate(items):
                return items
            assert time.monotonic() < deadline, f"{what} of {name} never came: {items}"
            time.sleep(0.2)

    def wait_async_terminal(self, name, count=1, timeout=60.0):
        """Waits until `count` async invocations of `name` are terminal; returns their full
        records (with payload and result), oldest first."""
        terminal = {"SUCCEEDED", "FAILED", "EXPIRED"}

        def done(items):
            finished = [i for i in items if i["mode"] == "async" and i["state"] in terminal]
            return len(finished) >= count

        items = self.wait_for(name, done, timeout, what=f"{count} finished async invocation(s)")
        finished = [i for i in items if i["mode"] == "async" and i["state"] in terminal]
        return [self.invocation(i["invocation_id"]) for i in reversed(finished)]


@pytest.fixture(scope="session")
def native():
    return Native()


@pytest.fixture
def create_function(lam):
    """Factory: creates a uniquely named Python function (waiting until it is Active) and
    deletes it after the test. Returns (name, CreateFunction response)."""
    created = []

    def create(prefix="fn", marker="v1", wait=True, **params):
        name = unique(prefix)
        args = {
            "FunctionName": name,
            "Runtime": PYTHON_RUNTIME,
            "Role": ROLE,
            "Handler": "app.handler",
            "Code": {"ZipFile": python_zip(marker)},
            "Timeout": 30,
        }
        args.update(params)
        resp = lam.create_function(**args)
        created.append(name)
        if wait:
            lam.get_waiter("function_active_v2").wait(
                FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
        return name, resp

    yield create
    for name in created:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass
