"""gust's WebAssembly runtime through the Lambda API: Runtime "wasm", and Code.ZipFile is the raw
WASI command module (examples/hello/hello.wasm: event on stdin, result on stdout, log on stderr)."""

import base64
import json
from pathlib import Path

import pytest

from conftest import ROLE, function_arn, payload_json, sha256_b64, unique

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello.wasm"


@pytest.fixture
def wasm_function(lam):
    name = unique("wasm")
    module = HELLO.read_bytes()
    created = lam.create_function(
        FunctionName=name, Runtime="wasm", Role=ROLE, Code={"ZipFile": module},
        MemorySize=128, Timeout=5, Environment={"Variables": {"GREETING": "Hi"}},
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    yield name, created, module
    try:
        lam.delete_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        pass


def test_a_wasm_function_is_created_and_invoked(lam, wasm_function):
    name, created, module = wasm_function
    assert created["Runtime"] == "wasm"
    assert created["FunctionArn"] == function_arn(name)
    assert created["CodeSha256"] == sha256_b64(module)
    assert created["CodeSize"] == len(module)

    out = lam.invoke(FunctionName=name, Payload=json.dumps({"name": "Ada"}), LogType="Tail")
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out
    assert out["ExecutedVersion"] == "$LATEST"
    assert payload_json(out) == {"message": "Hi, Ada!", "runtime": "gust wasm"}
    assert "hello: greeting Ada" in base64.b64decode(out["LogResult"]).decode()

    failed = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert failed["FunctionError"] == "Unhandled"
    assert "no \"name\" string field" in base64.b64decode(failed["LogResult"]).decode()


def test_a_wasm_function_has_versions_and_config_updates(lam, wasm_function):
    name, _, _ = wasm_function
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GREETING": "Yo"}})
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    latest = lam.invoke(FunctionName=name, Payload=b'{"name": "Bo"}')
    assert payload_json(latest)["message"] == "Yo, Bo!"
    v1 = lam.invoke(FunctionName=f"{name}:1", Payload=b'{"name": "Bo"}')
    assert (v1["ExecutedVersion"], payload_json(v1)["message"]) == ("1", "Hi, Bo!")
