"""The AWS CLI v1 (`aws`, installed in the same venv as this interpreter) against gust."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENDPOINT, PYTHON_RUNTIME, ROLE, function_arn, python_zip, unique

AWS = str(Path(sys.executable).parent / "aws")


def aws(*args, check=True):
    """Runs `aws lambda ARGS` on gust; returns the CompletedProcess."""
    env = dict(os.environ)
    # Only the environment's credentials and region: no profile or config of whoever runs this.
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env.pop("AWS_PROFILE", None)
    env["AWS_DEFAULT_OUTPUT"] = "json"
    proc = subprocess.run(
        [AWS, "lambda", *args, "--endpoint-url", ENDPOINT],
        env=env, capture_output=True, text=True, timeout=180,
    )
    if check:
        assert proc.returncode == 0, f"aws lambda {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def aws_json(*args):
    return json.loads(aws(*args).stdout)


@pytest.fixture
def cli_function(lam, tmp_path):
    """A function created with `aws lambda create-function --zip-file fileb://...`."""
    name = unique("cli")
    package = tmp_path / "function.zip"
    package.write_bytes(python_zip("cli"))
    created = aws_json(
        "create-function", "--function-name", name, "--runtime", PYTHON_RUNTIME,
        "--handler", "app.handler", "--role", ROLE, "--timeout", "30",
        "--zip-file", f"fileb://{package}",
    )
    yield name, created
    try:
        lam.delete_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        pass


def test_create_wait_get_and_list(cli_function):
    name, created = cli_function
    assert created["FunctionName"] == name
    assert created["FunctionArn"] == function_arn(name)
    assert created["Runtime"] == PYTHON_RUNTIME
    assert created["CodeSize"] == len(python_zip("cli"))

    aws("wait", "function-active-v2", "--function-name", name)
    got = aws_json("get-function", "--function-name", name)
    assert got["Configuration"]["State"] == "Active"
    assert got["Configuration"]["CodeSha256"] == created["CodeSha256"]

    listed = aws_json("list-functions", "--page-size", "1")
    names = [f["FunctionName"] for f in listed["Functions"]]
    assert name in names, "the CLI follows NextMarker through every page"
    assert len(names) == len(set(names))


def test_invoke_sync_with_tail_and_async(cli_function, native, tmp_path):
    name, _ = cli_function
    aws("wait", "function-active-v2", "--function-name", name)
    out_file = tmp_path / "out.json"
    printed = aws_json(
        "invoke", "--function-name", name, "--log-type", "Tail",
        "--payload", json.dumps({"print": ["cli-log-line"], "n": 1}), str(out_file),
    )
    assert printed["StatusCode"] == 200
    assert printed["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in printed
    assert "cli-log-line" in base64.b64decode(printed["LogResult"]).decode("utf-8", "replace")
    result = json.loads(out_file.read_text())
    assert result["marker"] == "cli"
    assert result["event"]["n"] == 1

    failed = aws_json("invoke", "--function-name", name, "--payload", '{"fail": "cli"}', str(out_file))
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(out_file.read_text())["errorType"] == "ValueError"

    queued = aws_json(
        "invoke", "--function-name", name, "--invocation-type", "Event",
        "--payload", '{"n": 2}', str(tmp_path / "async.json"),
    )
    assert queued["StatusCode"] == 202
    [record] = native.wait_async_terminal(name)
    assert record["state"] == "SUCCEEDED"
    assert json.loads(record["result"])["event"] == {"n": 2}


def test_a_missing_function_exits_255_with_the_error_code():
    proc = aws("get-function", "--function-name", unique("absent"), check=False)
    assert proc.returncode == 255, (proc.returncode, proc.stdout, proc.stderr)
    assert "ResourceNotFoundException" in proc.stderr
