"""gust's schedules through boto3's EventBridge Scheduler client (rest-json): schedules and
groups created, read, updated, listed and deleted with Scheduler's shapes and errors; a schedule
that fires a Python function each second (gust's own `rate(N seconds)`), with Scheduler's context
attributes in its input; a refused firing in the dead-letter queue."""

import json
import time

import pytest

from conftest import ACCOUNT, REGION, ROLE, function_arn, scheduler_client, sqs_client, unique


@pytest.fixture(scope="module")
def sched():
    return scheduler_client()


@pytest.fixture(scope="module")
def sqs():
    return sqs_client()


OFF = {"Mode": "OFF"}


def target(arn, **extra):
    return {"Arn": arn, "RoleArn": ROLE, **extra}


def test_schedules_are_created_read_updated_listed_and_deleted(sched):
    name = unique("s")
    arn = sched.create_schedule(
        Name=name, ScheduleExpression="cron(15 10 ? * MON-FRI *)", ScheduleExpressionTimezone="Europe/Paris",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        Target=target(function_arn("job"), Input='{"k": 1}', RetryPolicy={"MaximumRetryAttempts": 3}),
        Description="weekday mornings",
    )["ScheduleArn"]
    assert arn == f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{name}"
    got = sched.get_schedule(Name=name)
    assert got["State"] == "ENABLED" and got["GroupName"] == "default"
    assert got["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert got["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}
    assert got["Target"]["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 3}
    assert got["Target"]["Input"] == '{"k": 1}' and got["Description"] == "weekday mornings"
    assert got["CreationDate"].year >= 2026
    with pytest.raises(sched.exceptions.ConflictException):
        sched.create_schedule(Name=name, ScheduleExpression="rate(1 hour)", FlexibleTimeWindow=OFF,
                              Target=target(function_arn("job")))
    # Update replaces the whole schedule.
    sched.update_schedule(Name=name, ScheduleExpression="rate(2 hours)", FlexibleTimeWindow=OFF,
                          Target=target(function_arn("job", "live")), State="DISABLED")
    got = sched.get_schedule(Name=name)
    assert (got["ScheduleExpression"], got["State"]) == ("rate(2 hours)", "DISABLED")
    assert got["Target"]["Arn"] == function_arn("job", "live") and "Input" not in got["Target"]
    assert got["ScheduleExpressionTimezone"] == "UTC" and "Description" not in got
    others = [unique(name) for _ in range(3)]
    for o in others:
        sched.create_schedule(Name=o, ScheduleExpression="rate(1 day)", FlexibleTimeWindow=OFF,
                              Target=target(function_arn("job")))
    listed = sched.list_schedules(NamePrefix=name)["Schedules"]
    assert [s["Name"] for s in listed] == sorted([name] + others)
    assert listed[0]["Target"] == {"Arn": listed[0]["Target"]["Arn"]}
    page = sched.list_schedules(NamePrefix=name, MaxResults=2)
    rest = sched.list_schedules(NamePrefix=name, MaxResults=2, NextToken=page["NextToken"])
    assert [s["Name"] for s in page["Schedules"] + rest["Schedules"]] == sorted([name] + others)
    disabled = sched.list_schedules(NamePrefix=name, State="DISABLED")["Schedules"]
    assert [s["Name"] for s in disabled] == [name]
    paginated = [s["Name"] for p in sched.get_paginator("list_schedules").paginate(NamePrefix=name, PaginationConfig={"PageSize": 1}) for s in p["Schedules"]]
    assert paginated == sorted([name] + others)
    for n in [name] + others:
        sched.delete_schedule(Name=n)
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.get_schedule(Name=name)
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.delete_schedule(Name=name)


def test_schedule_groups_hold_schedules_and_take_them_when_deleted(sched):
    group = unique("g")
    arn = sched.create_schedule_group(Name=group)["ScheduleGroupArn"]
    assert arn == f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule-group/{group}"
    assert sched.get_schedule_group(Name=group)["State"] == "ACTIVE"
    assert sched.get_schedule_group(Name="default")["Name"] == "default"
    with pytest.raises(sched.exceptions.ConflictException):
        sched.create_schedule_group(Name=group)
    names = [g["Name"] for g in sched.list_schedule_groups(NamePrefix=group)["ScheduleGroups"]]
    assert names == [group]
    sched.create_schedule(Name="a", GroupName=group, ScheduleExpression="rate(1 day)", FlexibleTimeWindow=OFF,
                          Target=target(function_arn("job")))
    assert sched.get_schedule(Name="a", GroupName=group)["GroupName"] == group
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.get_schedule(Name="a")
    assert [s["Name"] for s in sched.list_schedules(GroupName=group)["Schedules"]] == ["a"]
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.create_schedule(Name="b", GroupName=unique("nogroup"), ScheduleExpression="rate(1 day)",
                              FlexibleTimeWindow=OFF, Target=target(function_arn("job")))
    sched.delete_schedule_group(Name=group)
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.get_schedule(Name="a", GroupName=group)
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.get_schedule_group(Name=group)
    assert sched.list_tags_for_resource(ResourceArn=arn)["Tags"] == []
    with pytest.raises(sched.exceptions.ValidationException):
        sched.tag_resource(ResourceArn=arn, Tags=[{"Key": "k", "Value": "v"}])


@pytest.mark.parametrize("expression,timezone,arn,says", [
    ("cron(0 9 * * * *)", "UTC", function_arn("job"), "exactly one of day-of-month and day-of-week"),
    ("rate(1 minutes)", "UTC", function_arn("job"), "singular"),
    ("rate(5 minutes)", "Mars/Olympus", function_arn("job"), "IANA"),
    ("at(2001-01-01T00:00:00)", "UTC", function_arn("job"), "never fire"),
    ("rate(5 minutes)", "UTC", f"arn:aws:sns:{REGION}:{ACCOUNT}:topic", "Target.Arn"),
])
def test_bad_schedules_are_validation_errors(sched, expression, timezone, arn, says):
    name = unique("bad")
    with pytest.raises(sched.exceptions.ValidationException) as e:
        sched.create_schedule(Name=name, ScheduleExpression=expression, ScheduleExpressionTimezone=timezone,
                              FlexibleTimeWindow=OFF, Target=target(arn))
    assert says in e.value.response["Error"]["Message"]
    with pytest.raises(sched.exceptions.ResourceNotFoundException):
        sched.get_schedule(Name=name)


def test_a_schedule_fires_a_python_function_with_its_context_attributes(sched, create_function, native):
    name, _ = create_function("sched")
    schedule = unique("every")
    sched.create_schedule(
        Name=schedule, ScheduleExpression="rate(1 second)", FlexibleTimeWindow=OFF,
        Target=target(function_arn(name),
                      Input='{"print": ["<aws.scheduler.scheduled-time>"], "arn": "<aws.scheduler.schedule-arn>"}'),
    )
    deadline = time.time() + 30
    while True:
        status, body = native.request("GET", f"/v1/schedules/{schedule}/history")
        assert status == 200, body
        firings = body["firings"]
        done = [f for f in firings if f.get("invocation_state") == "SUCCEEDED"]
        if len(done) >= 2:
            break
        assert time.time() < deadline, f"the schedule did not fire twice: {firings}"
        time.sleep(0.2)
    sched.delete_schedule(Name=schedule)
    rec = native.invocation(done[0]["invocation_id"])
    result = json.loads(rec["result"])
    assert result["event"]["arn"] == f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{schedule}"
    assert result["event"]["print"] == [done[0]["scheduled_time"]]
    assert done[0]["scheduled_time"] in rec["log"]


def test_a_firing_the_target_refuses_lands_in_the_dead_letter_queue(sched, sqs):
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    schedule = unique("orphan")
    sched.create_schedule(Name=schedule, ScheduleExpression="rate(1 second)", FlexibleTimeWindow=OFF,
                          Target=target(function_arn(unique("nosuch")), DeadLetterConfig={"Arn": dlq}))
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10, MessageAttributeNames=["All"])
    sched.delete_schedule(Name=schedule)
    message = got["Messages"][0]
    assert message["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "ResourceNotFound"
    event = json.loads(message["Body"])
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.scheduler"
    sqs.delete_queue(QueueUrl=url)
