"""The AWS deployment as scripts/package builds it: a template that passes cfn-lint, a zip that
holds what Lambda needs and runs on its own, stage settings the app accepts, and the archive
queue behaving as declared (moto's CloudFormation, no AWS account)."""

import importlib
import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from cfnlint.decode import decode
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from chalicelib.config import Settings

from .aws_events import API_HOST, MCP_HEADERS, URL_HOST, http_api_event, rest_api_event, tool_call
from .servers import ROOT

CHALICE_CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """build/dev/ of `./scripts/package dev`, built in a temporary folder."""
    build = tmp_path_factory.mktemp("build")
    result = subprocess.run([ROOT / "scripts" / "package", "dev"], cwd=ROOT, env={**os.environ, "BUILD_DIR": str(build)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return build / "dev"


@pytest.fixture(scope="module")
def template(package) -> dict:
    return yaml.safe_load((package / "sam.yaml").read_text())


def functions(template: dict) -> dict[str, dict]:
    return {name: resource["Properties"] for name, resource in template["Resources"].items()
            if resource["Type"] == "AWS::Serverless::Function"}


def test_the_template_passes_cfn_lint(package):
    result = subprocess.run([BIN / "cfn-lint", package / "sam.yaml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_gateway_throttles_every_route(template):
    """The rate limit that holds across Lambda containers (the app's buckets are per container)."""
    [setting] = template["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    assert setting["ThrottlingRateLimit"] == {"Ref": "ThrottleRatePerSecond"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ThrottleBurst"}
    assert "DefinitionBody" in template["Resources"]["RestAPI"]["Properties"]  # merged into Chalice's, not replaced


def test_the_template_has_both_entry_points(template):
    assert {name: props["Handler"] for name, props in functions(template).items()} == {
        "APIHandler": "app.app",  # REST API, /mcp included
        "Mcp": "app.mcp_handler",
        "ArchiveWorker": "app.archive_worker",  # the git archive (docs/archive.md)
        "ArchiveSweep": "app.archive_sweep",
        "Retention": "app.retention",  # docs/retention.md
    }


def test_the_zip_holds_the_app_its_dependencies_and_the_migrations_only(package):
    names = zipfile.ZipFile(package / "deployment.zip").namelist()
    top = {name.split("/")[0] for name in names}
    assert {"app.py", "chalicelib", "migrations", "chalice", "mcp", "mangum", "pydantic", "orjson", "jinja2", "nh3", "markdown_it"} <= top
    # The web UI's templates and assets (chalicelib/web/) travel with the code.
    web = {f"chalicelib/web/{path.relative_to(ROOT / 'chalicelib' / 'web')}" for path in (ROOT / "chalicelib" / "web").glob("[st]*/*")}
    assert web and web <= set(names)
    assert not top & {"fastapi", "uvloop", "httptools", "watchfiles", "websockets", "moto", "cfnlint", "pytest", "tests"}
    migrations = {f"migrations/{path.name}" for path in (ROOT / "migrations").glob("*.sql")}
    assert migrations and migrations <= set(names)


@pytest.mark.skipif((sys.platform, platform.machine()) != ("linux", "x86_64"),
                    reason="the zip's compiled wheels are for Lambda's platform, Linux x86_64")
def test_the_zip_runs_on_its_own(package, tmp_path):
    """Unzipped, and with nothing but the standard library besides (no site-packages), the
    package answers a REST and an MCP invocation: no dependency is missing."""
    zipfile.ZipFile(package / "deployment.zip").extractall(tmp_path / "task")
    script = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app, mcp
rest, mcp_event, web = json.load(sys.stdin)
print(json.dumps({"rest": app.app(rest, None), "mcp": app.mcp_handler(mcp_event, None), "web": app.app(web, None),
                  "files": [app.__file__, mcp.__file__]}))
"""
    events = [rest_api_event("GET", "/api/list_projects"),
              http_api_event("POST", "/mcp", tool_call("list_projects", {}), MCP_HEADERS), rest_api_event("GET", "/")]
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/lambda.db", "ALLOWED_HOSTS": json.dumps([URL_HOST, API_HOST])}
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(tmp_path / "task")], input=json.dumps(events),
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert all(path.startswith(str(tmp_path / "task")) for path in answers["files"])
    assert (answers["rest"]["statusCode"], json.loads(answers["rest"]["body"])) == (200, {"projects": [], "next_cursor": None})
    assert answers["mcp"]["statusCode"] == 200
    assert answers["web"]["statusCode"] == 200 and "No messages yet." in answers["web"]["body"]  # the web UI's inbox
    assert 'href="/api/ui/projects"' in answers["web"]["body"]  # under API Gateway's stage
    assert json.loads(answers["mcp"]["body"])["result"]["structuredContent"] == {"projects": [], "next_cursor": None}


@pytest.mark.parametrize("stage", sorted(CHALICE_CONFIG["stages"]))
def test_every_function_has_its_memory_and_timeout(template, stage, monkeypatch, tmp_path):
    """Chalice ignores a lambda_functions entry whose name matches no function: every function
    of the app has one, in every stage, and the packaged template (dev) carries its numbers."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")  # importing app.py opens it
    app = importlib.import_module("app").app
    names = {"api_handler"} | {function.name for function in app.pure_lambda_functions}
    names |= {source.name for source in app.event_sources}
    configured = CHALICE_CONFIG["stages"][stage]["lambda_functions"]
    assert set(configured) == names
    for config in configured.values():
        assert set(config) >= {"lambda_memory_size", "lambda_timeout"}
    if stage == "dev":
        packaged = {(props["MemorySize"], props["Timeout"]) for props in functions(template).values()}
        assert packaged == {(config["lambda_memory_size"], config["lambda_timeout"]) for config in configured.values()}


def test_every_function_has_room_in_tmp_for_its_replica(template):
    """Lambda's /tmp is 512 MB unless set: a replica and its search index of ~65,000 messages filled it."""
    assert {name: props.get("EphemeralStorage") for name, props in functions(template).items()} == dict.fromkeys(
        ["APIHandler", "Mcp", "ArchiveWorker", "ArchiveSweep", "Retention"], {"Size": {"Ref": "TmpStorageMB"}})
    assert template["Parameters"]["TmpStorageMB"]["Default"] == 10240


@pytest.mark.parametrize("stage", sorted(CHALICE_CONFIG["stages"]))
def test_a_cold_container_may_finish_downloading_its_replica(stage):
    """A new container downloads its replica at its first call, and a download cut short starts over
    (bench/replica_bootstrap.py): at 15 s, one that took longer (1.2 GB took 8-12 s on a loopback)
    was never whole. The API functions may outlive API Gateway's 29 s (that call gets a 504; its
    container then serves the next)."""
    functions = CHALICE_CONFIG["stages"][stage]["lambda_functions"]
    assert min(functions[name]["lambda_timeout"] for name in ("api_handler", "mcp")) >= 120


@pytest.mark.parametrize("stage", sorted(CHALICE_CONFIG["stages"]))
def test_the_archive_queue_outlasts_its_worker_and_the_sweep_outlasts_the_queue(stage):
    """QA, session 37: the worker had 60 s, where a cold one pulls its replica and clones the
    archive (dulwich indexes what it fetches in Python: 31 MB, 50,000 messages, took 11-16 s on a
    loopback; 646 MB at a million, bench/README.md). The queue's visibility timeout is at least 6
    times the worker's (AWS's advice: a throttled batch's retries), and a message's receives end
    (maxReceiveCount of them, each at most that long) before the sweep publishes its row again."""
    from chalicelib.archive import cloud

    worker = CHALICE_CONFIG["stages"][stage]["lambda_functions"]["archive_worker"]["lambda_timeout"]
    ours, _ = decode(str(ROOT / "infra" / "template.yaml"))
    queue = ours["Resources"]["ArchiveQueue"]["Properties"]
    assert worker >= 300
    assert queue["VisibilityTimeout"] == cloud.VISIBILITY_SECONDS >= 6 * worker
    assert cloud.QUEUED_MAX_SECONDS > queue["RedrivePolicy"]["maxReceiveCount"] * queue["VisibilityTimeout"]
    assert cloud.PUSH_MARGIN_SECONDS < worker


@pytest.mark.parametrize("stage", sorted(CHALICE_CONFIG["stages"]))
def test_stage_settings_are_valid(stage, monkeypatch):
    """A value the app refuses (ALLOWED_HOSTS is a JSON list) would fail every cold start."""
    for name, value in CHALICE_CONFIG["stages"][stage]["environment_variables"].items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert isinstance(settings.allowed_hosts, list)


def test_docs_deploy_lists_every_parameter_and_resource(template):
    """docs/deploy.md's tables name every template parameter and every resource infra/template.yaml adds."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    ours, _ = decode(str(ROOT / "infra" / "template.yaml"))
    added = {name for name, resource in ours["Resources"].items() if "Type" in resource}  # the others amend Chalice's
    assert {name for name in [*template["Parameters"], *added] if f"`{name}`" not in docs} == set()


def test_the_functions_read_their_secret_settings_at_start_not_from_their_configuration(template):
    """The environment names the secret; no value of it is resolved into a function's
    configuration; every function's role may read it (and only it)."""
    roles = {name: resource["Properties"] for name, resource in template["Resources"].items() if resource["Type"] == "AWS::IAM::Role"}
    for name, props in functions(template).items():
        variables = props["Environment"]["Variables"]
        assert variables["APP_SECRET_ARN"] == {"Ref": "AppSecret"}, name
        assert "resolve:secretsmanager" not in json.dumps(variables), name
        role = props.get("Role", {"Fn::GetAtt": ["DefaultRole", "Arn"]})["Fn::GetAtt"][0]
        reads = [statement for policy in roles[role]["Policies"] for statement in policy["PolicyDocument"]["Statement"]
                 if "secretsmanager:GetSecretValue" in statement["Action"]]
        assert reads == [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "AppSecret"}}], name


def test_failing_archive_jobs_end_in_the_dead_letter_queue(template):
    """The template's queues, created by moto's CloudFormation: a FIFO queue that drops
    duplicates, and hands a job received maxReceiveCount times to the dead-letter queue."""
    queues = {name: resource for name, resource in template["Resources"].items() if resource["Type"] == "AWS::SQS::Queue"}
    outputs = {name: template["Outputs"][name] for name in ("ArchiveQueueUrl", "ArchiveDeadLetterQueueUrl")}
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack(StackName="agent-mail-test", TemplateBody=json.dumps(
            {"AWSTemplateFormatVersion": "2010-09-09", "Resources": queues, "Outputs": outputs}))
        stack = cloudformation.describe_stacks(StackName="agent-mail-test")["Stacks"][0]
        urls = {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}
        assert urls["ArchiveQueueUrl"].endswith("/agent-mail-test-archive.fifo")

        sqs = boto3.client("sqs", region_name="us-east-1")
        for _ in range(2):  # the same job twice: content-based deduplication keeps one
            sqs.send_message(QueueUrl=urls["ArchiveQueueUrl"], MessageBody='{"project": "demo"}', MessageGroupId="demo")
        max_receives = queues["ArchiveQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        for _ in range(max_receives):  # a worker that fails: receives, never deletes
            received = sqs.receive_message(QueueUrl=urls["ArchiveQueueUrl"], VisibilityTimeout=0, MaxNumberOfMessages=10)
            assert [message["Body"] for message in received["Messages"]] == ['{"project": "demo"}']
        assert "Messages" not in sqs.receive_message(QueueUrl=urls["ArchiveQueueUrl"], VisibilityTimeout=0)
        dead = sqs.receive_message(QueueUrl=urls["ArchiveDeadLetterQueueUrl"])
        assert [message["Body"] for message in dead["Messages"]] == ['{"project": "demo"}']


# What each function's code calls: attachments through S3Storage (put: the API's uploads;
# read, size: downloads, the archive's copies, the collector's checks; walk, delete, take: the
# collector, take claiming the bucket; the API functions may put the claim's key too, as any
# blobs/ key), archive jobs through SQS (send: the after-write publish and the sweep; receive,
# delete: Lambda's queue mapping, on the worker's behalf; retry: the worker's retry_later).
REACHES = {
    "APIHandler": {"put", "read", "size", "walk", "take", "send"},
    "Mcp": {"put", "read", "size", "walk", "take", "send"},
    "ArchiveWorker": {"read", "size", "walk", "receive", "retry"},
    "ArchiveSweep": {"send"},
    "Retention": {"read", "size", "walk", "delete", "take"},
}


def resolved(value, names: dict[str, str]):
    """The template's Fn::Sub, Fn::GetAtt and Ref, with these names' values."""
    if isinstance(value, dict) and "Ref" in value:
        return names[value["Ref"]]
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", lambda match: names[match[1]], value["Fn::Sub"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return names[".".join(value["Fn::GetAtt"])]
    if isinstance(value, dict):
        return {key: resolved(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [resolved(item, names) for item in value]
    return value


@set_initial_no_auth_action_count(5)  # the setup's first five calls; IAM decides every later one
def test_each_function_reaches_only_what_its_code_calls(template):
    """Each function's role, made in moto's IAM with its policies as packaged, and moto
    enforcing them: what the function's code calls passes, anything else is refused. Only
    Retention may delete attachment content; only the worker may take jobs off the queue."""
    from chalicelib.attachments.storage import S3Storage

    with mock_aws():
        region, account = "us-east-1", "123456789012"
        boto3.client("s3", region_name=region).create_bucket(Bucket="blobs-bucket")
        queue = boto3.client("sqs", region_name=region).create_queue(
            QueueName="agent-mail-archive.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
        iam = boto3.client("iam", region_name=region)
        iam.create_user(UserName="deployer")
        iam.put_user_policy(UserName="deployer", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="deployer")["AccessKey"]
        deployer = boto3.Session(key["AccessKeyId"], key["SecretAccessKey"], region_name=region)
        names = {"AWS::Partition": "aws", "AWS::Region": region, "AWS::AccountId": account, "AWS::StackName": "agent-mail",
                 "AttachmentsBucket.Arn": "arn:aws:s3:::blobs-bucket",
                 "ArchiveQueue.Arn": f"arn:aws:sqs:{region}:{account}:agent-mail-archive.fifo",
                 # moto checks Secrets Manager's actions, not their resources: the test above checks those
                 "AppSecret": f"arn:aws:secretsmanager:{region}:{account}:secret:agent-mail/settings-abcdef"}
        written = S3Storage("blobs-bucket", deployer.client("s3")).put(b"kept")
        deployer.client("sqs").send_message(QueueUrl=queue, MessageBody="{}", MessageGroupId="demo", MessageDeduplicationId="kept")
        [received] = deployer.client("sqs").receive_message(QueueUrl=queue, VisibilityTimeout=0)["Messages"]
        handle = received["ReceiptHandle"]
        iam = deployer.client("iam")
        reaches = {}
        for function, props in functions(template).items():
            role = props["Role"]["Fn::GetAtt"][0]
            # Lambda assumes the role in AWS; here the deployer does (moto checks the trust).
            iam.create_role(RoleName=f"{function}-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/deployer"}, "Action": "sts:AssumeRole"}]}))
            for policy in template["Resources"][role]["Properties"]["Policies"]:
                iam.put_role_policy(RoleName=f"{function}-role", PolicyName=policy["PolicyName"],
                                    PolicyDocument=json.dumps(resolved(policy["PolicyDocument"], names)))
            credentials = deployer.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{function}-role",
                                                             RoleSessionName=function)["Credentials"]
            session = boto3.Session(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"],
                                    region_name=region)
            blobs, sqs = S3Storage("blobs-bucket", session.client("s3")), session.client("sqs")
            calls = {
                "put": lambda: blobs.put(function.encode()),
                "read": lambda: blobs.read(written),
                "size": lambda: blobs.size(written),
                "walk": lambda: blobs.walk("", 10),
                "delete": lambda: blobs.delete("0" * 64),
                "take": lambda: blobs.take(function),
                # The code sends batches; AWS authorizes SendMessageBatch as sqs:SendMessage, moto
                # under the batch's own name, so one message here.
                "send": lambda: sqs.send_message(QueueUrl=queue, MessageBody="{}", MessageGroupId="demo",
                                                 MessageDeduplicationId=function),
                "receive": lambda: sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0),
                # cloud.retry_later's ChangeMessageVisibilityBatch, authorized as sqs:ChangeMessageVisibility (as send's)
                "retry": lambda: sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=handle, VisibilityTimeout=0),
            }
            reaches[function] = set()
            for name, call in calls.items():
                try:
                    call()
                except ClientError as exc:
                    assert exc.response["Error"]["Code"] in ("AccessDenied", "403"), (function, name, exc.response["Error"])
                else:
                    reaches[function].add(name)
            with pytest.raises(ClientError, match="AccessDenied"):  # outside blobs/
                session.client("s3").put_object(Bucket="blobs-bucket", Key="other/file", Body=b"x")
        assert reaches == REACHES


def test_the_alarms_watch_their_own_stacks_metrics(template):
    """Two stages in one account and region: each alarm watches its own stack's API and metrics."""
    resources, stack = template["Resources"], {"Ref": "AWS::StackName"}
    assert resources["RestAPI"]["Properties"]["Name"] == stack
    watched = [metric["MetricStat"]["Metric"]["Dimensions"] for metric in resources["ServerErrorRateAlarm"]["Properties"]["Metrics"]
               if "MetricStat" in metric]
    assert watched == [[{"Name": "ApiName", "Value": stack}, {"Name": "Stage", "Value": "api"}]] * 2
    assert resources["ArchiveLagAlarm"]["Properties"]["Dimensions"] == [{"Name": "Service", "Value": stack}]
    for name, props in functions(template).items():  # what ops/emf.py writes as the Service dimension
        assert props["Environment"]["Variables"]["METRICS_SERVICE"] == stack, name


def test_a_path_or_method_no_route_takes_is_a_404_in_the_error_shape(template):
    """API Gateway answers those itself (403 "Missing Authentication Token"): the template
    gives them the error shape every other answer has."""
    response = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]["MISSING_AUTHENTICATION_TOKEN"]
    assert response["StatusCode"] == "404" and response["ResponseParameters"]["Headers"]["Content-Type"] == "'application/json'"
    body = json.loads(response["ResponseTemplates"]["application/json"].replace("$context.httpMethod $context.path", "GET /x"))
    assert set(body["error"]) == {"code", "message", "hint"} and body["error"]["code"] == "not_found"


def test_the_function_url_has_a_concurrency_cap_and_the_bucket_keeps_its_policy(template):
    """QA session 30: API Gateway's throttling does not reach the function URL (requests without a
    token could start Mcp containers up to the account's limit), and deleting the stack kept the
    attachments bucket but deleted its TLS-only policy."""
    assert functions(template)["Mcp"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["WithMcpFunctionUrl", {"Ref": "McpUrlConcurrency"}, {"Ref": "AWS::NoValue"}]}
    assert [functions(template)[name].get("ReservedConcurrentExecutions") for name in ("APIHandler", "ArchiveWorker")] == [None, None]
    for name in ("AttachmentsBucket", "AttachmentsBucketPolicy"):
        assert (template["Resources"][name]["DeletionPolicy"], template["Resources"][name]["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_the_archive_workers_racing_to_push_one_branch_are_capped(template):
    """QA, session 36: a FIFO queue starts a worker per message group (project), and all of them
    push the one branch (each redoing its push on top of another's): with more than a few busy projects whole
    batches failed and waited out the visibility timeout. The queue's mapping caps them (AWS's
    minimum is 2; reserved concurrency instead would throttle deliveries toward the dead-letter queue)."""
    [source] = functions(template)["ArchiveWorker"]["Events"].values()
    assert source["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "ArchiveWorkerConcurrency"}}
    parameter = template["Parameters"]["ArchiveWorkerConcurrency"]
    assert (parameter["Default"], parameter["MinValue"], parameter["MaxValue"]) == (2, 2, 1000)
