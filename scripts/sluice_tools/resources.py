"""A provider's data resources, defined once from its settings as CloudFormation resources.

The deploy merges these into the Chalice-packaged template; the local stack creates the very
same definitions in moto. Nothing about the stream, table, bucket or queue is declared twice.

They hold the data (queued records, the ledger, results, parked records), so CloudFormation
keeps them (``DeletionPolicy`` and ``UpdateReplacePolicy`` ``Retain``): deleting the stack, or
a change that would replace one of them, leaves the resource in place (README: clean-up).
A bucket name holding ``${AWS::...}`` is an ``Fn::Sub`` pattern (account and region).
"""

from __future__ import annotations

from typing import Any

from sluice.settings import ProviderSettings

RETENTION_HOURS = 168  # 7 days: a circuit open over a long weekend must not lose records
RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
DATA_RESOURCES = ("RequestStream", "Ledger", "Results", "ParkedQueue")


def queue_name(settings: ProviderSettings) -> str:
    return f"{settings.stream_name}-parked"


def _name(value: str) -> Any:
    return {"Fn::Sub": value} if "${" in value else value


def provider_resources(settings: ProviderSettings) -> dict[str, dict[str, Any]]:
    settings.require("stream_name", "table_name", "result_bucket")
    resources = {
        "RequestStream": {
            "Type": "AWS::Kinesis::Stream",
            "Properties": {
                "Name": settings.stream_name,
                "ShardCount": settings.shards,
                "RetentionPeriodHours": RETENTION_HOURS,
                "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
            },
        },
        "Ledger": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": settings.table_name,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
            },
        },
        "Results": {
            "Type": "AWS::S3::Bucket",
            "Properties": {
                "BucketName": _name(settings.result_bucket),
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
            },
        },
        "ParkedQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": queue_name(settings),
                "MessageRetentionPeriod": 1_209_600,
                "SqsManagedSseEnabled": True,
            },
        },
    }
    for resource in resources.values():
        resource.update(RETAIN)
    return resources


def resource_outputs() -> dict[str, dict[str, Any]]:
    """What the tools and the plain `chalice deploy` path read back from a stack."""
    return {
        "StreamName": {"Value": {"Ref": "RequestStream"}},
        "LedgerTable": {"Value": {"Ref": "Ledger"}},
        "ResultsBucket": {"Value": {"Ref": "Results"}},
        "ParkedQueueUrl": {"Value": {"Ref": "ParkedQueue"}},
    }


def create_locally(resources: dict[str, dict[str, Any]], session: Any) -> dict[str, str]:
    """Create the resources through boto3 (pointed at moto); returns logical id -> ARN/URL."""
    created: dict[str, str] = {}
    for logical_id, resource in resources.items():
        kind, props = resource["Type"], resource["Properties"]
        if kind == "AWS::Kinesis::Stream":
            kinesis = session.client("kinesis")
            kinesis.create_stream(StreamName=props["Name"], ShardCount=props["ShardCount"])
            kinesis.get_waiter("stream_exists").wait(
                StreamName=props["Name"], WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
            kinesis.increase_stream_retention_period(
                StreamName=props["Name"], RetentionPeriodHours=props["RetentionPeriodHours"])
            created[logical_id] = kinesis.describe_stream_summary(StreamName=props["Name"])[
                "StreamDescriptionSummary"]["StreamARN"]
        elif kind == "AWS::DynamoDB::Table":
            dynamodb = session.client("dynamodb")
            table = dynamodb.create_table(
                TableName=props["TableName"],
                BillingMode=props["BillingMode"],
                AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"],
            )["TableDescription"]
            ttl = props["TimeToLiveSpecification"]
            dynamodb.update_time_to_live(
                TableName=props["TableName"],
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"],
                                         "Enabled": ttl["Enabled"]},
            )
            created[logical_id] = table["TableArn"]
        elif kind == "AWS::S3::Bucket":
            s3 = session.client("s3")
            s3.create_bucket(Bucket=props["BucketName"])
            s3.put_public_access_block(
                Bucket=props["BucketName"],
                PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"],
            )
            created[logical_id] = f"arn:aws:s3:::{props['BucketName']}"
        elif kind == "AWS::SQS::Queue":
            sqs = session.client("sqs")
            created[logical_id] = sqs.create_queue(
                QueueName=props["QueueName"],
                Attributes={"MessageRetentionPeriod": str(props["MessageRetentionPeriod"])},
            )["QueueUrl"]
        else:
            raise ValueError(f"{logical_id}: the local stack cannot create {kind}")
    return created
