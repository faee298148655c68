"""Attachments on AWS: the template's bucket (moto's CloudFormation), and the Chalice app
storing in it, reading from it, and handing out presigned GET and PUT URLs (moto)."""

import base64
import hashlib
import importlib
import io
import json
import os
from urllib.parse import urlencode

import boto3
import pytest
import requests
from chalice.test import Client
from cfnlint.decode import decode
from moto import mock_aws
from PIL import Image

from chalicelib.archive import rebuild
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.attachments import storage
from chalicelib.config import get_settings
from chalicelib.store import db

from .servers import ROOT

TEMPLATE, _ = decode(str(ROOT / "infra" / "template.yaml"))


@pytest.fixture
def bucket(monkeypatch):
    """The template's AttachmentsBucket, made by moto's CloudFormation."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        resources = {name: TEMPLATE["Resources"][name] for name in ("AttachmentsBucket",)}
        cloudformation = boto3.client("cloudformation")
        cloudformation.create_stack(StackName="agent-mail-test", TemplateBody=json.dumps({
            "AWSTemplateFormatVersion": "2010-09-09", "Resources": resources,
            "Outputs": {"AttachmentsBucketName": TEMPLATE["Outputs"]["AttachmentsBucketName"]}}))
        [output] = cloudformation.describe_stacks(StackName="agent-mail-test")["Stacks"][0]["Outputs"]
        storage._s3.cache_clear()
        yield output["OutputValue"]
        storage._s3.cache_clear()


@pytest.fixture
def chalice(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/agent_mail.db")
    monkeypatch.setenv("ATTACHMENTS_BUCKET", bucket)
    monkeypatch.setenv("ARCHIVE_DIR", str(tmp_path / "archive"))
    get_settings.cache_clear()
    app = importlib.import_module("app").create_app(get_settings())
    with Client(app, project_dir=str(ROOT)) as client:
        http = client.http

        def post(tool, **arguments):
            response = http.post(f"/api/{tool}", headers={"Content-Type": "application/json"}, body=json.dumps(arguments))
            return response.status_code, json.loads(response.body)

        post("ensure_project", human_key="/aws/demo")
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key="aws-demo", program="p", model="m", name=name)
            post("set_contact_policy", project_key="aws-demo", agent_name=name, policy="open")
        yield post, http
    get_settings.cache_clear()


def test_the_bucket_is_private_encrypted_and_has_a_lifecycle(bucket):
    s3 = boto3.client("s3")
    [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    properties = TEMPLATE["Resources"]["AttachmentsBucket"]["Properties"]  # moto's CloudFormation applies only encryption
    assert all(properties["PublicAccessBlockConfiguration"].values()) and len(properties["PublicAccessBlockConfiguration"]) == 4
    rules = {rule["Id"]: rule for rule in properties["LifecycleConfiguration"]["Rules"]}
    assert rules["AbortUnfinishedUploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    assert rules["OlderToInfrequentAccess"]["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    policy = TEMPLATE["Resources"]["AttachmentsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert policy[0]["Effect"] == "Deny" and policy[0]["Condition"] == {"Bool": {"aws:SecureTransport": False}}
    functions_env = TEMPLATE["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert functions_env["ATTACHMENTS_BUCKET"] == {"Ref": "AttachmentsBucket"}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(out, "PNG")
    return out.getvalue()


def test_send_store_once_read_and_download_through_s3(chalice, bucket):
    post, http = chalice
    screenshot = png()
    sent = [post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                 attachments=[{"name": "shot.png", "content_base64": base64.b64encode(screenshot).decode(),
                               "keep_original": True}])[1]["message"] for _ in range(2)]
    sha = hashlib.sha256(screenshot).hexdigest()
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"blobs/{sha[:2]}/{sha}"]  # sent twice, stored once
    status, found = post("get_attachment", project_key="aws-demo", agent_name="GreenCastle", message_id=sent[1]["id"], sha256=sha)
    assert status == 200 and base64.b64decode(found["content_base64"]) == screenshot
    assert found["url"].startswith(f"https://{bucket}.s3.amazonaws.com/blobs/") and "X-Amz-Expires=300" in found["url"]
    query = urlencode({"project_key": "aws-demo", "agent_name": "GreenCastle", "message_id": sent[0]["id"]})
    redirect = http.get(f"/api/attachments/{sha}?{query}")
    assert redirect.status_code == 302
    fetched = requests.get(redirect.headers["Location"])
    assert fetched.status_code == 200 and fetched.content == screenshot
    twice = http.get(f"/api/attachments/{sha}?{query}&agent_name=BlueLake")  # QA, session 32: the last one was taken
    assert twice.status_code == 422 and "agent_name is given more than once" in json.loads(twice.body)["error"]["message"]
    refused = http.get(f"/api/attachments/{sha}?" + urlencode({"project_key": "aws-demo", "agent_name": "GreenCastle",
                                                              "message_id": "123"}))
    assert refused.status_code == 404


def test_a_large_file_goes_through_a_presigned_s3_put(chalice, bucket):
    post, _ = chalice
    data = os.urandom(11 * 1024 * 1024)  # over API Gateway's 10 MB (and Lambda's 6 MB) payload limit
    sha = hashlib.sha256(data).hexdigest()
    status, target = post("request_attachment_upload", project_key="aws-demo", agent_name="BlueLake", sha256=sha, size=len(data))
    assert status == 200 and target["already_stored"] is False and target["url"].startswith(f"https://{bucket}.s3")
    uploaded = requests.put(target["url"], data=data, headers=target["headers"])
    assert uploaded.status_code == 200, uploaded.text
    status, sent = post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="dump",
                        body_md="b", attachments=[{"name": "heap.bin", "sha256": sha}])
    assert status == 200 and sent["message"]["attachments"][0]["size"] == len(data)
    status, found = post("get_attachment", project_key="aws-demo", agent_name="GreenCastle",
                         message_id=sent["message"]["id"], sha256=sha)
    assert found["content_base64"] is None  # too large to inline: the presigned link
    assert hashlib.sha256(requests.get(found["url"]).content).hexdigest() == sha
    status, missing = post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="x",
                           body_md="b", attachments=[{"name": "x", "sha256": "b" * 64}])
    assert status == 404 and "No uploaded content" in missing["error"]["message"]  # as an unknown agent or message


def test_the_archive_reads_attachments_from_s3(chalice, bucket, tmp_path):
    post, _ = chalice
    post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
         attachments=[{"name": "a.txt", "content_base64": base64.b64encode(b"from s3").decode()}])
    settings = get_settings()
    with db.connection(settings) as conn, db.transaction(conn, write=False), GitArchive(tmp_path / "rebuilt", bare=True) as archive:
        rebuild.rebuild(conn, archive)
        blobs = {path: content for path, content in archive.files().items() if "/attachments/" in path}
    assert list(blobs.values()) == [b"from s3"]


def test_retention_deletes_content_no_message_names_from_the_bucket(chalice, bucket, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from chalicelib import clock
    from chalicelib.tools.retention import run_retention

    post, _ = chalice
    unsent = b"uploaded, never sent"
    sha = hashlib.sha256(unsent).hexdigest()
    status, target = post("request_attachment_upload", project_key="aws-demo", agent_name="BlueLake", sha256=sha, size=len(unsent))
    assert requests.put(target["url"], data=unsent, headers=target["headers"]).status_code == 200
    status, sent = post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="log",
                        body_md="b", attachments=[{"name": "kept.txt", "content_base64": base64.b64encode(b"kept").decode()}])
    kept = sent["message"]["attachments"][0]["sha256"]
    done = []
    for seconds in (0, 3601):  # found unnamed 8 days later; deleted once ATTACHMENT_DELETE_DELAY_SECONDS have passed
        ahead = datetime.now(timezone.utc) + timedelta(days=8, seconds=seconds)
        monkeypatch.setattr(clock, "now", lambda ahead=ahead: ahead.isoformat(timespec="microseconds"))
        done.append(run_retention(get_settings()))
    assert [(run["attachments_condemned"], run["attachments_deleted"]) for run in done] == [(1, 0), (0, 1)]
    keys = {item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {storage.S3Storage.key(kept), "blobs/.collected-for"}  # the claim: this database collects the bucket


def test_a_second_database_never_deletes_from_the_bucket(chalice, bucket, monkeypatch, tmp_path):
    """A local server pointed at the stack's bucket has a database that names nothing there: its
    runs would condemn everything. It never claims the bucket, so it deletes nothing; the
    database whose messages name the bucket's content claims it and collects."""
    from datetime import datetime, timedelta, timezone

    from chalicelib import clock
    from chalicelib.tools.retention import run_retention

    post, _ = chalice
    post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="log", body_md="b",
         attachments=[{"name": "kept.txt", "content_base64": base64.b64encode(b"kept").decode()}])
    unsent = storage.storage(get_settings()).put(b"uploaded, never sent")
    stack, local = get_settings(), get_settings().model_copy(update={"database_url": f"sqlite:///{tmp_path}/local.db"})
    runs = {}
    for seconds in (0, 3601):
        ahead = datetime.now(timezone.utc) + timedelta(days=8, seconds=seconds)
        monkeypatch.setattr(clock, "now", lambda ahead=ahead: ahead.isoformat(timespec="microseconds"))
        for name, settings in (("local", local), ("stack", stack)):  # the local one first: the bucket is unclaimed then
            run = run_retention(settings)
            runs.setdefault(name, []).append((run["attachments_condemned"], run["attachments_deleted"]))
    assert runs == {"local": [(0, 0), (0, 0)], "stack": [(1, 0), (0, 1)]}
    marker = boto3.client("s3").get_object(Bucket=bucket, Key="blobs/.collected-for")["Body"].read().decode()
    assert marker == str(stack.database_path.resolve())
    assert storage.storage(stack).size(unsent) is None


def test_content_missing_from_the_bucket_is_a_clear_error(chalice, bucket):
    post, http = chalice
    data = b"build log\n" * 50
    sent = post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "build.log", "content_base64": base64.b64encode(data).decode()}])[1]["message"]
    sha = hashlib.sha256(data).hexdigest()
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"blobs/{sha[:2]}/{sha}")
    status, found = post("get_attachment", project_key="aws-demo", agent_name="GreenCastle", message_id=sent["id"], sha256=sha)
    assert status == 500 and "build.log" in found["error"]["message"] and "missing" in found["error"]["message"]
    # QA, session 32: without the content (a link only: the download route, a large file) it was a
    # 302 to a presigned URL that S3 refused.
    status, found = post("get_attachment", project_key="aws-demo", agent_name="GreenCastle", message_id=sent["id"], sha256=sha,
                         include_content=False)
    assert status == 500 and "build.log" in found["error"]["message"]
    routed = http.get(f"/api/attachments/{sha}?" + urlencode({"project_key": "aws-demo", "agent_name": "GreenCastle",
                                                             "message_id": sent["id"]}))
    assert routed.status_code == 500 and "missing from the server's storage" in json.loads(routed.body)["error"]["message"]
