// gust's AWS Lambda API driven by the AWS SDK for JavaScript v3 (@aws-sdk/client-lambda), and its
// queues by @aws-sdk/client-sqs.
//
// Run against a gust server started by crates/gust/tests/aws_clients.rs (or by hand):
//   GUST_AWS_ENDPOINT=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//   AWS_DEFAULT_REGION=us-east-1 node tests/aws/node/test.mjs
// node:test runs the tests in order and exits non-zero if any fails.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";

import {
  CreateFunctionCommand,
  CreateFunctionUrlConfigCommand,
  DeleteFunctionUrlConfigCommand,
  GetFunctionUrlConfigCommand,
  ListFunctionUrlConfigsCommand,
  ResourceConflictException,
  UpdateFunctionUrlConfigCommand,
  DeleteFunctionCommand,
  DeleteFunctionConcurrencyCommand,
  GetFunctionCommand,
  GetFunctionEventInvokeConfigCommand,
  InvokeCommand,
  LambdaClient,
  PutFunctionConcurrencyCommand,
  PutFunctionEventInvokeConfigCommand,
  ResourceNotFoundException,
  TooManyRequestsException,
  waitUntilFunctionActiveV2,
} from "@aws-sdk/client-lambda";

for (const key of ["GUST_AWS_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]) {
  if (!process.env[key]) {
    console.error(`${key} is not set: this suite needs a running gust server (see crates/gust/tests/aws_clients.rs)`);
    process.exit(2);
  }
}

const region = process.env.AWS_DEFAULT_REGION;
const client = new LambdaClient({
  endpoint: process.env.GUST_AWS_ENDPOINT,
  region,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
  maxAttempts: 1, // every assertion sees what the server answered; a 429 is not retried
});

const ROLE = "arn:aws:iam::000000000000:role/gust-test";
const arn = (name) => `arn:aws:lambda:${region}:000000000000:function:${name}`;
const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const APP = `
def handler(event, context):
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError("boom: " + str(event["fail"]))
    return {"echo": event, "function": context.function_name, "runtime": "python"}
`;

// A zip archive with stored (uncompressed) entries: enough for a function package, no dependency.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function zip(files) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [path, text] of Object.entries(files)) {
    const name = encoder.encode(path);
    const data = encoder.encode(text);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0, 6); // flags
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x5821, 12); // date 2024-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(0x0314, 4); // made by: unix, 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x5821, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt16LE(0, 30); // extra
    central.writeUInt16LE(0, 32); // comment
    central.writeUInt16LE(0, 34); // disk
    central.writeUInt16LE(0, 36); // internal attributes
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // external: regular file, rw-r--r--
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(files).length, 8);
  end.writeUInt16LE(Object.keys(files).length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  return new Uint8Array(Buffer.concat([...locals, ...centrals, end]));
}

const created = [];
async function createPythonFunction(prefix) {
  const name = unique(prefix);
  const out = await client.send(
    new CreateFunctionCommand({
      FunctionName: name,
      Runtime: "python3.11",
      Role: ROLE,
      Handler: "app.handler",
      Code: { ZipFile: zip({ "app.py": APP }) },
      Timeout: 30,
    }),
  );
  created.push(name);
  return { name, out };
}
const waitActive = (name) =>
  waitUntilFunctionActiveV2({ client, maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { FunctionName: name });
const invokeJson = async (params) => {
  const out = await client.send(new InvokeCommand(params));
  const text = decoder.decode(out.Payload ?? new Uint8Array());
  return { out, body: text ? JSON.parse(text) : null };
};

after(async () => {
  for (const name of created) {
    try {
      await client.send(new DeleteFunctionCommand({ FunctionName: name }));
    } catch (e) {
      if (!(e instanceof ResourceNotFoundException)) throw e;
    }
  }
});

let fn; // the function most tests share

test("CreateFunction, then waitUntilFunctionActiveV2", async () => {
  const { name, out } = await createPythonFunction("node");
  fn = name;
  assert.equal(out.$metadata.httpStatusCode, 201);
  assert.equal(out.FunctionName, name);
  assert.equal(out.FunctionArn, arn(name));
  assert.equal(out.Runtime, "python3.11");
  assert.equal(out.State, "Pending");
  assert.match(out.CodeSha256, /^[A-Za-z0-9+/]{43}=$/, "base64 SHA-256");

  const waited = await waitActive(name);
  assert.equal(waited.state, "SUCCESS");
  const got = await client.send(new GetFunctionCommand({ FunctionName: name }));
  assert.equal(got.Configuration.State, "Active");
  assert.equal(got.Configuration.LastUpdateStatus, "Successful");
  assert.equal(got.Configuration.CodeSha256, out.CodeSha256);
});

test("Invoke round-trips the payload and reports function errors", async () => {
  const event = { name: "Ada", list: [1, 2, 3] };
  const { out, body } = await invokeJson({ FunctionName: fn, Payload: encoder.encode(JSON.stringify(event)) });
  assert.equal(out.StatusCode, 200);
  assert.equal(out.FunctionError, undefined);
  assert.equal(out.ExecutedVersion, "$LATEST");
  assert.deepEqual(body, { echo: event, function: fn, runtime: "python" });

  const failed = await invokeJson({ FunctionName: arn(fn), Payload: encoder.encode('{"fail": "node"}') });
  assert.equal(failed.out.StatusCode, 200);
  assert.equal(failed.out.FunctionError, "Unhandled");
  assert.equal(failed.body.errorType, "ValueError");
  assert.match(failed.body.errorMessage, /boom: node/);

  const queued = await client.send(
    new InvokeCommand({ FunctionName: fn, InvocationType: "Event", Payload: encoder.encode("{}") }),
  );
  assert.equal(queued.StatusCode, 202);
});

test("a missing function is a ResourceNotFoundException", async () => {
  const missing = unique("node-missing");
  await assert.rejects(client.send(new GetFunctionCommand({ FunctionName: missing })), (e) => {
    assert.ok(e instanceof ResourceNotFoundException, `${e.name}: ${e.message}`);
    assert.equal(e.name, "ResourceNotFoundException");
    assert.equal(e.$metadata.httpStatusCode, 404);
    return true;
  });
  await assert.rejects(
    client.send(new InvokeCommand({ FunctionName: missing, Payload: encoder.encode("{}") })),
    ResourceNotFoundException,
  );
});

test("reserved concurrency 0 throttles with TooManyRequestsException and its Reason", async () => {
  const put = await client.send(
    new PutFunctionConcurrencyCommand({ FunctionName: fn, ReservedConcurrentExecutions: 0 }),
  );
  assert.equal(put.ReservedConcurrentExecutions, 0);
  await assert.rejects(
    client.send(new InvokeCommand({ FunctionName: fn, Payload: encoder.encode("{}") })),
    (e) => {
      assert.ok(e instanceof TooManyRequestsException, `${e.name}: ${e.message}`);
      assert.equal(e.Reason, "ReservedFunctionConcurrentInvocationLimitExceeded");
      assert.equal(e.$metadata.httpStatusCode, 429);
      return true;
    },
  );
  await client.send(new DeleteFunctionConcurrencyCommand({ FunctionName: fn }));
  const { out } = await invokeJson({ FunctionName: fn, Payload: encoder.encode("{}") });
  assert.equal(out.StatusCode, 200, "invokes run again once the reservation is removed");
});

test("GetFunctionEventInvokeConfig: LastModified parses as a date", async () => {
  const { name: dest } = await createPythonFunction("node-dest");
  const put = await client.send(
    new PutFunctionEventInvokeConfigCommand({
      FunctionName: fn,
      MaximumRetryAttempts: 1,
      MaximumEventAgeInSeconds: 120,
      DestinationConfig: { OnFailure: { Destination: arn(dest) } },
    }),
  );
  assert.equal(put.MaximumRetryAttempts, 1);
  const got = await client.send(new GetFunctionEventInvokeConfigCommand({ FunctionName: fn }));
  assert.ok(got.LastModified instanceof Date, `LastModified is a Date: ${got.LastModified}`);
  assert.ok(!Number.isNaN(got.LastModified.getTime()), "LastModified is a valid date");
  assert.ok(Math.abs(Date.now() - got.LastModified.getTime()) < 600_000, `${got.LastModified} is now`);
  assert.equal(got.MaximumRetryAttempts, 1);
  assert.equal(got.MaximumEventAgeInSeconds, 120);
  assert.equal(got.DestinationConfig.OnFailure.Destination, arn(dest));
});

test("function URL configs: create, get, update, list, delete; the URL answers", async () => {
  const created = await client.send(
    new CreateFunctionUrlConfigCommand({ FunctionName: fn, AuthType: "NONE", Cors: { AllowOrigins: ["*"] } }),
  );
  assert.equal(created.$metadata.httpStatusCode, 201);
  assert.equal(created.FunctionArn, arn(fn));
  assert.match(created.FunctionUrl, /[a-z0-9]{32}/);
  await assert.rejects(
    client.send(new CreateFunctionUrlConfigCommand({ FunctionName: fn, AuthType: "NONE" })),
    (e) => e instanceof ResourceConflictException,
  );
  const got = await client.send(new GetFunctionUrlConfigCommand({ FunctionName: fn }));
  assert.equal(got.FunctionUrl, created.FunctionUrl);
  assert.deepEqual(got.Cors.AllowOrigins, ["*"]);
  const updated = await client.send(new UpdateFunctionUrlConfigCommand({ FunctionName: fn, AuthType: "AWS_IAM" }));
  assert.equal(updated.AuthType, "AWS_IAM");
  const listed = await client.send(new ListFunctionUrlConfigsCommand({ FunctionName: fn }));
  assert.equal(listed.FunctionUrlConfigs.length, 1);
  assert.equal((await fetch(created.FunctionUrl)).status, 403, "an AWS_IAM URL refuses an unsigned call");
  await client.send(new UpdateFunctionUrlConfigCommand({ FunctionName: fn, AuthType: "NONE" }));
  const answer = await fetch(`${created.FunctionUrl}hello?x=1`);
  assert.equal(answer.status, 200);
  const body = await answer.json();
  assert.equal(body.echo.rawPath, "/hello");
  assert.deepEqual(body.echo.queryStringParameters, { x: "1" });
  await client.send(new DeleteFunctionUrlConfigCommand({ FunctionName: fn }));
  await assert.rejects(
    client.send(new GetFunctionUrlConfigCommand({ FunctionName: fn })),
    (e) => e instanceof ResourceNotFoundException,
  );
});

// ---- SQS (@aws-sdk/client-sqs): gust's queues; the SDK checks the MD5s of what it sends and
// receives, so a wrong digest fails these calls.

test("SQS: create, send (single and batch) with attributes, long-poll receive, delete, errors", async () => {
  const { SQSClient, CreateQueueCommand, SendMessageCommand, SendMessageBatchCommand, ReceiveMessageCommand,
    DeleteMessageCommand, DeleteQueueCommand, GetQueueAttributesCommand, QueueDoesNotExist } = await import("@aws-sdk/client-sqs");
  const { createHash } = await import("node:crypto");
  const sqs = new SQSClient({ region, endpoint: process.env.GUST_AWS_ENDPOINT, maxAttempts: 1 });
  const name = `node-q-${randomUUID().slice(0, 8)}`;
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name }));
  assert.ok(QueueUrl.endsWith(`/000000000000/${name}`));
  const attrs = { kind: { DataType: "String", StringValue: "order" }, raw: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 255]) } };
  const sent = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: "héllo", MessageAttributes: attrs }));
  assert.equal(sent.MD5OfMessageBody, createHash("md5").update("héllo").digest("hex"));
  const batch = await sqs.send(new SendMessageBatchCommand({
    QueueUrl, Entries: [1, 2, 3].map((i) => ({ Id: `e${i}`, MessageBody: `body ${i}` })),
  }));
  assert.equal(batch.Successful.length, 3);
  const bodies = [];
  while (bodies.length < 4) {
    const got = await sqs.send(new ReceiveMessageCommand({
      QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, MessageAttributeNames: ["All"],
    }));
    assert.ok(got.Messages && got.Messages.length > 0, `only ${bodies.length} of 4 received`);
    for (const m of got.Messages) {
      bodies.push(m.Body);
      if (m.Body === "héllo") {
        assert.deepEqual([...m.MessageAttributes.raw.BinaryValue], [0, 1, 255]);
        assert.equal(m.MD5OfMessageAttributes, sent.MD5OfMessageAttributes);
      }
      await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: m.ReceiptHandle }));
    }
  }
  assert.deepEqual(bodies.sort(), ["body 1", "body 2", "body 3", "héllo"]);
  const counted = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["All"] }));
  assert.equal(counted.Attributes.ApproximateNumberOfMessages, "0");
  await sqs.send(new DeleteQueueCommand({ QueueUrl }));
  await assert.rejects(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: "x" })), (e) => {
    assert.ok(e instanceof QueueDoesNotExist || e.name === "QueueDoesNotExist" || e.Code === "AWS.SimpleQueueService.NonExistentQueue", `${e.name}`);
    return true;
  });
});
