"""gust's queues through an SDK of mid-2023 (boto3 1.28.0 / botocore 1.31.0), which speaks SQS's
older query protocol (form bodies, XML answers): every common operation, attributes, message
attributes with their digests, batches, and SQS's error codes. Run by
crates/gust/tests/aws_clients.rs with that botocore first on PYTHONPATH (./scripts/test
installs it into target/py-legacy-boto) and the server's coordinates in the environment."""

import hashlib
import os

import boto3

sqs = boto3.client("sqs", endpoint_url=os.environ["GUST_AWS_ENDPOINT"], region_name="us-east-1")
assert sqs.meta.service_model.protocol == "query", sqs.meta.service_model.protocol
url = sqs.create_queue(QueueName="legacy", Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
assert sqs.get_queue_url(QueueName="legacy")["QueueUrl"] == url
assert url in sqs.list_queues(QueueNamePrefix="leg")["QueueUrls"]
attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
assert attrs["VisibilityTimeout"] == "40", attrs
r = sqs.send_message(QueueUrl=url, MessageBody="hello <&> world", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
assert r["MD5OfMessageBody"] == hashlib.md5(b"hello <&> world").hexdigest()
b = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "a"}, {"Id": "2", "MessageBody": "b", "DelaySeconds": 0}])
assert len(b["Successful"]) == 2, b
got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
assert sorted(m["Body"] for m in got) == ["a", "b", "hello <&> world"], got
m = [m for m in got if m["Body"].startswith("hello")][0]
assert m["MessageAttributes"]["k"]["StringValue"] == "v" and m["Attributes"]["ApproximateReceiveCount"] == "1"
sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=10)
d = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": x["ReceiptHandle"]} for i, x in enumerate(got)])
assert len(d["Successful"]) == 3, d
try:
    sqs.get_queue_url(QueueName="nosuch")
    raise SystemExit("no error")
except sqs.exceptions.QueueDoesNotExist as e:
    assert e.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue", e.response
sqs.purge_queue(QueueUrl=url)
sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "1"})
sqs.delete_queue(QueueUrl=url)
print("legacy query protocol OK")
