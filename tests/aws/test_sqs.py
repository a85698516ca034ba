"""gust's queues through boto3's SQS client (AWS JSON 1.0): queues, attributes, send and
receive with SQS's digests, batches, visibility, receipts that stop working once a message is
received again, long polling, dead-letter queues, purge, and SQS's errors."""

import hashlib
import json
import threading
import time

import pytest

from conftest import ACCOUNT, sqs_client, unique


@pytest.fixture(scope="module")
def sqs():
    return sqs_client()


@pytest.fixture
def queue(sqs):
    name = unique("q")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    yield url
    try:
        sqs.delete_queue(QueueUrl=url)
    except sqs.exceptions.QueueDoesNotExist:
        pass


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def query_code(exc_info):
    """The older query code SQS sends in x-amzn-query-error (botocore's Error.Code) and the
    JSON error type (Error.QueryErrorCode)."""
    err = exc_info.value.response["Error"]
    return err["Code"], err.get("QueryErrorCode")


def test_queues_are_created_found_listed_and_deleted(sqs):
    name = unique("life")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    assert url.endswith(f"/{ACCOUNT}/{name}")
    # Creating it again with the same attributes answers the same queue; different ones fail.
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert query_code(e) == ("QueueAlreadyExists", "QueueNameExists")
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    others = [sqs.create_queue(QueueName=f"{name}-{i}")["QueueUrl"] for i in range(3)]
    listed = sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    assert listed == [url] + others
    page = sqs.list_queues(QueueNamePrefix=name, MaxResults=2)
    assert page["QueueUrls"] == [url, others[0]]
    rest = sqs.list_queues(QueueNamePrefix=name, MaxResults=2, NextToken=page["NextToken"])
    assert rest["QueueUrls"] == others[1:]
    for u in [url] + others:
        sqs.delete_queue(QueueUrl=u)
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.get_queue_url(QueueName=name)
    assert query_code(e) == ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert query_code(e)[1] == "QueueDoesNotExist"


def test_attributes_are_kept_within_sqs_bounds(sqs, queue):
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["MaximumMessageSize"] == "262144"
    assert attrs["QueueArn"].startswith(f"arn:aws:sqs:us-east-1:{ACCOUNT}:")
    assert attrs["ApproximateNumberOfMessages"] == "0"
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"DelaySeconds": "2", "MessageRetentionPeriod": "120"})
    got = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["DelaySeconds", "MessageRetentionPeriod"])
    assert got["Attributes"] == {"DelaySeconds": "2", "MessageRetentionPeriod": "120"}
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "43201"})
    assert query_code(e)[1] == "InvalidAttributeValue"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"NoSuchThing": "1"})
    assert query_code(e)[1] == "InvalidAttributeName"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"FifoQueue": "true"})
    assert "FifoQueue" in e.value.response["Error"]["Message"]


def test_a_message_is_sent_received_with_its_digests_and_deleted(sqs, queue):
    attributes = {
        "kind": {"DataType": "String", "StringValue": "order"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    }
    sent = sqs.send_message(QueueUrl=queue, MessageBody="héllo wörld", MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == md5("héllo wörld")
    assert len(sent["MD5OfMessageAttributes"]) == 32
    got = sqs.receive_message(
        QueueUrl=queue, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    assert len(got) == 1
    m = got[0]
    assert m["MessageId"] == sent["MessageId"]
    assert m["Body"] == "héllo wörld"
    assert m["MD5OfBody"] == md5("héllo wörld")
    assert m["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert m["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01\xff"
    assert m["MessageAttributes"]["count"] == {"DataType": "Number", "StringValue": "3"}
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"
    assert int(m["Attributes"]["SentTimestamp"]) > 0
    # Hidden while in flight: nothing to receive, one in flight.
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="not-a-receipt")
    assert query_code(e)[1] == "ReceiptHandleIsInvalid"


def test_a_receipt_stops_working_once_its_message_is_received_again(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="again")
    first = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0)["Messages"][0]
    second = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=30, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    # The old receipt deletes nothing (SQS answers success); the message stays in flight.
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"])
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    assert query_code(e)[1] == "MessageNotInflight"
    # The new one makes it visible at once, and deletes it.
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=queue)["Messages"][0]
    assert third["MessageId"] == first["MessageId"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=third["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)


def test_batches_answer_each_entry(sqs, queue):
    entries = [{"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(9)]
    entries.append({"Id": "bad", "MessageBody": "x", "DelaySeconds": 901})
    sent = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    assert sorted(s["Id"] for s in sent["Successful"]) == sorted(f"m{i}" for i in range(9))
    assert [(f["Id"], f["SenderFault"]) for f in sent["Failed"]] == [("bad", True)]
    for s in sent["Successful"]:
        assert s["MD5OfMessageBody"] == md5(f"body {s['Id'][1:]}")
    received = []
    while len(received) < 9:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        assert got, f"only {len(received)} of 9 received"
        received += got
    assert sorted(m["Body"] for m in received) == sorted(f"body {i}" for i in range(9))
    handles = [{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
    handles.append({"Id": "junk", "ReceiptHandle": "junk"})
    deleted = sqs.delete_message_batch(QueueUrl=queue, Entries=handles)
    assert len(deleted["Successful"]) == 9
    assert [f["Code"] for f in deleted["Failed"]] == ["ReceiptHandleIsInvalid"]
    for bad, code in [
        ([], "EmptyBatchRequest"),
        ([{"Id": str(i), "MessageBody": "x"} for i in range(11)], "TooManyEntriesInBatchRequest"),
        ([{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}], "BatchEntryIdsNotDistinct"),
        ([{"Id": "a b", "MessageBody": "x"}], "InvalidBatchEntryId"),
    ]:
        with pytest.raises(sqs.exceptions.ClientError) as e:
            sqs.send_message_batch(QueueUrl=queue, Entries=bad)
        assert query_code(e)[1] == code


def test_a_long_poll_waits_for_a_message_and_no_longer(sqs, queue):
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)
    assert 1.8 <= time.monotonic() - started < 6
    threading.Timer(1.0, lambda: sqs_client().send_message(QueueUrl=queue, MessageBody="late")).start()
    started = time.monotonic()
    got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10)["Messages"]
    assert got[0]["Body"] == "late"
    assert time.monotonic() - started < 5, "the receive returned when the message came, not at its wait time"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=21)
    assert query_code(e)[1] == "InvalidParameterValue"


def test_delayed_messages_become_visible_after_their_delay(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=2)
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    assert got[0]["Body"] == "later"


def test_messages_received_too_often_move_to_the_dead_letter_queue(sqs):
    dlq_name = unique("dlq")
    dlq = sqs.create_queue(QueueName=dlq_name)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = '{"deadLetterTargetArn":"%s","maxReceiveCount":"2"}' % dlq_arn
    src = sqs.create_queue(QueueName=unique("src"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    got = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    assert '"maxReceiveCount":2' in got.replace(" ", "") and dlq_arn in got
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=src, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    # A third receive finds it gone to the dead-letter queue.
    assert "Messages" not in sqs.receive_message(QueueUrl=src)
    moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1)["Messages"]
    assert moved[0]["Body"] == "poison"
    # A dead-letter queue must exist.
    missing = policy.replace(dlq_name, unique("nowhere"))
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=unique("src"), Attributes={"RedrivePolicy": missing})
    assert query_code(e)[1] == "InvalidParameterValue"
    sqs.delete_queue(QueueUrl=src)
    sqs.delete_queue(QueueUrl=dlq)


def test_purge_empties_a_queue(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(5)])
    sqs.purge_queue(QueueUrl=queue)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)


def test_messages_are_checked_before_they_are_stored(sqs, queue):
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=queue, MessageBody="x" * 262_145)
    assert query_code(e)[1] == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=queue, MessageBody="bad \x01 char")
    assert query_code(e)[1] == "InvalidMessageContents"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=queue, MessageBody="x", MessageAttributes={"AWS.x": {"DataType": "String", "StringValue": "v"}})
    assert query_code(e)[1] == "InvalidParameterValue"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)


def test_a_bad_signature_is_refused(sqs, queue):
    bad = sqs_client(secret_key="wrong")
    with pytest.raises(bad.exceptions.ClientError) as e:
        bad.send_message(QueueUrl=queue, MessageBody="x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_event_source_mappings_through_the_lambda_api(sqs, lam):
    from conftest import PYTHON_RUNTIME, ROLE, python_zip
    name = unique("esm")
    lam.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": python_zip("esm")})
    url = sqs.create_queue(QueueName=unique("src"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    m = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, BatchSize=5, Enabled=False,
        FunctionResponseTypes=["ReportBatchItemFailures"], ScalingConfig={"MaximumConcurrency": 3},
    )
    assert m["State"] == "Disabled" and m["BatchSize"] == 5
    assert m["FunctionArn"].endswith(f":function:{name}")
    assert m["LastModified"].year >= 2026
    got = lam.get_event_source_mapping(UUID=m["UUID"])
    assert got["ScalingConfig"] == {"MaximumConcurrency": 3}
    listed = lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert [x["UUID"] for x in listed] == [m["UUID"]]
    updated = lam.update_event_source_mapping(UUID=m["UUID"], BatchSize=7)
    assert updated["BatchSize"] == 7
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_event_source_mapping(UUID=m["UUID"], BatchSize=50)
    lam.delete_event_source_mapping(UUID=m["UUID"])
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID=m["UUID"])
    lam.delete_function(FunctionName=name)
    sqs.delete_queue(QueueUrl=url)


def test_queues_are_destinations_and_dead_letter_queues_of_async_invocations(sqs, lam):
    import json
    from conftest import PYTHON_RUNTIME, ROLE, python_zip
    name = unique("dst")
    ok_url = sqs.create_queue(QueueName=unique("ok"))["QueueUrl"]
    dead_url = sqs.create_queue(QueueName=unique("dead"))["QueueUrl"]
    arn = lambda url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    lam.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": python_zip("dst")}, DeadLetterConfig={"TargetArn": arn(dead_url)})
    assert lam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == {"TargetArn": arn(dead_url)}
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0,
                                         DestinationConfig={"OnSuccess": {"Destination": arn(ok_url)}})
    shown = lam.get_function_event_invoke_config(FunctionName=name)
    assert shown["DestinationConfig"]["OnSuccess"] == {"Destination": arn(ok_url)}
    ok = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 1}')
    bad = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"fail": "on purpose"}')
    record = json.loads(sqs.receive_message(QueueUrl=ok_url, WaitTimeSeconds=20)["Messages"][0]["Body"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["requestId"] == ok["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert record["responsePayload"]["event"] == {"n": 1}
    dead = sqs.receive_message(QueueUrl=dead_url, WaitTimeSeconds=20, MessageAttributeNames=["All"])["Messages"][0]
    assert json.loads(dead["Body"]) == {"fail": "on purpose"}
    assert "on purpose" in dead["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert dead["MessageAttributes"]["RequestID"]["StringValue"] == bad["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:t"})
    lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": ""})
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=name)
    lam.delete_function(FunctionName=name)
    sqs.delete_queue(QueueUrl=ok_url)
    sqs.delete_queue(QueueUrl=dead_url)


def test_fifo_queues_keep_group_order_and_drop_duplicates(sqs):
    name = unique("orders") + ".fifo"
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.create_queue(QueueName=name)  # a .fifo name needs FifoQueue=true
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.create_queue(QueueName=unique("plain"), Attributes={"FifoQueue": "true"})
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true" and attrs["ContentBasedDeduplication"] == "true"
    with pytest.raises(sqs.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="no group")
    assert query_code(e)[0] == "MissingParameter"
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="a", DelaySeconds=5)
    sequences = []
    for i in range(4):
        for group in ("a", "b"):
            r = sqs.send_message(QueueUrl=url, MessageBody=f"{group}-{i}", MessageGroupId=group)
            sequences.append(int(r["SequenceNumber"]))
            assert len(r["SequenceNumber"]) == 20
    assert sequences == sorted(sequences) and len(set(sequences)) == 8
    # Content-based deduplication: the same body again within five minutes is the same message.
    first = sqs.send_message(QueueUrl=url, MessageBody="a-0", MessageGroupId="a")
    assert first["MessageId"] == sqs.send_message(QueueUrl=url, MessageBody="a-0", MessageGroupId="a")["MessageId"]
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "1", "MessageBody": "c-0", "MessageGroupId": "c", "MessageDeduplicationId": "c0"},
        {"Id": "2", "MessageBody": "c-0 again", "MessageGroupId": "c", "MessageDeduplicationId": "c0"},
    ])
    ids = {e["Id"]: e["MessageId"] for e in batch["Successful"]}
    assert ids["1"] == ids["2"], "a duplicate within the batch is the first message"
    # One receiver holds group a's head: nobody else gets group a until it is deleted.
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=30,
                              AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["a-0", "b-0"]
    assert got[0]["Attributes"]["MessageGroupId"] == "a"
    assert got[0]["Attributes"]["SequenceNumber"] == str(sequences[0]).zfill(20)
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
    assert [m["Body"] for m in rest] == ["c-0"], "groups a and b are in flight"
    for m in got + rest:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    bodies = []
    while True:
        page = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not page:
            break
        bodies += [m["Body"] for m in page]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(page)])
    assert [b for b in bodies if b.startswith("a")] == ["a-1", "a-2", "a-3"]
    assert [b for b in bodies if b.startswith("b")] == ["b-1", "b-2", "b-3"]
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "false"})
    sqs.delete_queue(QueueUrl=url)


def test_a_mapping_with_filter_criteria_invokes_only_for_matching_messages(sqs, lam, native):
    import json
    from conftest import PYTHON_RUNTIME, ROLE, python_zip
    name = unique("flt")
    lam.create_function(FunctionName=name, Runtime=PYTHON_RUNTIME, Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": python_zip("flt")})
    url = sqs.create_queue(QueueName=unique("src"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name,
                                        FilterCriteria={"Filters": [{"Pattern": '{"body": "not a list"}'}]})
    pattern = '{"body": {"kind": ["order"], "total": [{"numeric": [">", 100]}]}}'
    m = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=10,
                                        FilterCriteria={"Filters": [{"Pattern": pattern}]})
    assert m["FilterCriteria"] == {"Filters": [{"Pattern": pattern}]}
    bodies = [
        {"kind": "order", "total": 250},
        {"kind": "order", "total": 5},
        {"kind": "refund", "total": 500},
        "not json at all",
        {"kind": "order", "total": 101},
    ]
    for b in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(b) if isinstance(b, dict) else b)
    deadline = time.time() + 30
    while True:
        seen = []
        for inv in native.invocations(name):
            if inv["state"] == "SUCCEEDED":
                record = native.invocation(inv["invocation_id"])
                seen += [json.loads(r["body"]) for r in json.loads(record["result"])["event"]["Records"]]
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        drained = counts["ApproximateNumberOfMessages"] == "0" and counts["ApproximateNumberOfMessagesNotVisible"] == "0"
        if len(seen) >= 2 and drained:
            break
        assert time.time() < deadline, f"seen {seen}, queue {counts}"
        time.sleep(0.3)
    assert sorted(b["total"] for b in seen) == [101, 250], "only the matching orders reached the function"
    lam.delete_event_source_mapping(UUID=m["UUID"])
    lam.delete_function(FunctionName=name)
    sqs.delete_queue(QueueUrl=url)


def test_dead_letters_are_redriven_back_to_their_source_or_elsewhere(sqs):
    dlq_url = sqs.create_queue(QueueName=unique("dl"))["QueueUrl"]
    arn = lambda url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn(dlq_url), "maxReceiveCount": 1})
    src = sqs.create_queue(QueueName=unique("src"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=src, MessageBody=f"m{i}")
    # Received once and not deleted: the next receive moves them to the dead-letter queue.
    assert len(sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]) == 3
    assert "Messages" not in sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)
    counts = lambda url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
    assert counts(dlq_url) == "3"
    # Back where they came from (no DestinationArn), then on to another queue.
    handle = sqs.start_message_move_task(SourceArn=arn(dlq_url))["TaskHandle"]
    assert counts(dlq_url) == "0" and counts(src) == "3"
    tasks = sqs.list_message_move_tasks(SourceArn=arn(dlq_url))["Results"]
    assert tasks[0]["TaskHandle"] == handle and tasks[0]["Status"] == "COMPLETED"
    assert tasks[0]["ApproximateNumberOfMessagesMoved"] == 3
    got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == ["m0", "m1", "m2"]
    assert all(m.get("Attributes", {}).get("ApproximateReceiveCount", "1") == "1" for m in got)
    other = sqs.create_queue(QueueName=unique("other"))["QueueUrl"]
    for m in got:
        sqs.change_message_visibility(QueueUrl=src, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)  # moves them to the DLQ again
    sqs.start_message_move_task(SourceArn=arn(dlq_url), DestinationArn=arn(other))
    assert counts(other) == "3" and counts(dlq_url) == "0"
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.cancel_message_move_task(TaskHandle=handle)
    for u in (src, dlq_url, other):
        sqs.delete_queue(QueueUrl=u)
