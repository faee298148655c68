"""A SHA-256 alone does not name stored content (security review, session 28): content is stored
once for everyone, so knowing a file's hash let any writer attach another project's file to its
own message and read it back, and `already_stored` told whether any file was stored. With
authentication on, a send names content by its sha256 only if its credential uploaded it lately
or a message the sender sent or received carries it (docs/attachments.md)."""

import base64
import hashlib
import json
import os
import time

import boto3
import httpx
import pytest
import requests

from chalicelib.attachments import storage

from .servers import running_server
from .test_attachments_s3 import TEMPLATE, bucket  # noqa: F401 (a fixture)

TOKENS = ["op", {"token": "back", "projects": ["/back"], "role": "writer"},
          {"token": "front", "projects": ["/front"], "role": "writer"}]
SECRET = b"TOPSECRET: the backend's database password"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Projects back (BlueLake, RedStone) and front (GreenCastle, PinkDog), each agent's token;
    BlueLake sent RedStone SECRET as an attachment."""
    directory = tmp_path_factory.mktemp("possession")
    with running_server(directory / "agent_mail.db", ATTACHMENTS_DIR=str(directory / "attachments"),
                        AUTH_BEARER_TOKENS=json.dumps(TOKENS)) as url:
        client = httpx.Client(base_url=url, timeout=30)
        tokens = {}
        for project, credential, names in (("/back", "back", ["BlueLake", "RedStone"]), ("/front", "front", ["GreenCastle", "PinkDog"])):
            client.post("/api/ensure_project", json={"human_key": project}, headers=bearer("op")).raise_for_status()
            for name in names:
                registered = client.post("/api/register_agent", headers=bearer(credential),
                                         json={"project_key": project, "program": "p", "model": "m", "name": name})
                tokens[name] = registered.json()["registration_token"]
                client.post("/api/set_contact_policy", headers=bearer(credential), json={
                    "project_key": project, "agent_name": name, "policy": "open", "registration_token": tokens[name]})
        client.tokens = tokens
        assert send(client, "back", "BlueLake", "RedStone", [{"name": "db.env", "content_base64": b64(SECRET)}]).status_code == 200
        yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def send(client, credential: str, sender: str, to: str, attachments: list) -> httpx.Response:
    project = "/back" if credential == "back" else "/front"
    return client.post("/api/send_message", headers=bearer(credential), json={
        "project_key": project, "sender_name": sender, "sender_token": client.tokens[sender], "to": [to],
        "subject": "files", "body_md": "attached", "attachments": attachments})


def upload_target(client, credential: str, agent: str, content: bytes) -> dict:
    project = "/back" if credential == "back" else "/front"
    answer = client.post("/api/request_attachment_upload", headers=bearer(credential), json={
        "project_key": project, "agent_name": agent, "registration_token": client.tokens[agent],
        "sha256": sha(content), "size": len(content)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_another_projects_content_is_not_named_by_its_sha256(world):
    assert upload_target(world, "front", "GreenCastle", SECRET)["already_stored"] is False  # said True: it is stored
    stolen = send(world, "front", "GreenCastle", "PinkDog", [{"name": "got.txt", "sha256": sha(SECRET)}])
    unknown = send(world, "front", "GreenCastle", "PinkDog", [{"name": "got.txt", "sha256": "b" * 64}])
    assert stolen.status_code == unknown.status_code == 404  # the same answer as content never stored
    assert stolen.json()["error"]["message"].replace(sha(SECRET), "b" * 64) == unknown.json()["error"]["message"]
    # Its own upload of the same bytes: then it may (it has them).
    put = world.put("/api/attachments", content=SECRET, headers=bearer("front"))
    assert put.status_code == 200 and put.json()["sha256"] == sha(SECRET)
    assert upload_target(world, "front", "GreenCastle", SECRET)["already_stored"] is True
    assert send(world, "front", "GreenCastle", "PinkDog", [{"name": "mine.txt", "sha256": sha(SECRET)}]).status_code == 200


def test_a_recipient_forwards_what_it_received_and_a_sender_what_it_sent(world):
    for sender, to in (("RedStone", "BlueLake"), ("BlueLake", "RedStone")):
        assert send(world, "back", sender, to, [{"name": "again.env", "sha256": sha(SECRET)}]).status_code == 200
    assert upload_target(world, "back", "RedStone", SECRET)["already_stored"] is True


def test_an_upload_names_its_content_for_its_credential_only(world):
    content = os.urandom(64)
    assert world.put("/api/attachments", content=content, headers=bearer("front")).status_code == 200
    assert send(world, "back", "BlueLake", "RedStone", [{"name": "x.bin", "sha256": sha(content)}]).status_code == 404
    assert send(world, "front", "PinkDog", "GreenCastle", [{"name": "x.bin", "sha256": sha(content)}]).status_code == 200


def test_a_receipt_names_its_content_for_a_day_and_then_expires(tmp_path):
    local = storage.LocalStorage(tmp_path)
    digest = local.put(b"log")
    assert local.claim(digest, "u1") is None  # stored, not uploaded by u1
    local.give_receipt("u1", digest)
    assert local.claim(digest, "u1") == 3 and local.claim(digest, "u2") is None
    old = time.time() - storage.RECEIPT_SECONDS - 1
    os.utime(local.receipt("u1", digest), (old, old))
    assert local.claim(digest, "u1") is None
    assert local.expire_receipts(10) == 1 and not local.receipt("u1", digest).exists()
    assert local.size(digest) == 3 and [sha for sha, _ in local.walk("", 10)] == [digest]  # receipts are not content


def test_on_s3_an_upload_goes_to_its_uploaders_key_and_is_claimed_into_blobs(bucket):
    """The presigned PUT's key is the uploader's, so the server knows who put the bytes (S3 checks
    them against the sha256); claiming copies them to the content's address. The template's bucket
    deletes uploads after a day."""
    client = boto3.client("s3")
    s3 = storage.S3Storage(bucket, client)
    content = os.urandom(1000)
    target = s3.upload_target(sha(content), len(content), "u1")
    assert f"/uploads/u1/{sha(content)}" in target["url"]
    assert requests.put(target["url"], data=content, headers=target["headers"]).status_code == 200
    assert s3.size(sha(content)) is None and s3.claim(sha(content), "u2") is None
    assert s3.claim(sha(content), "u1") == len(content) and s3.read(sha(content)) == content
    rules = TEMPLATE["Resources"]["AttachmentsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]  # (moto keeps none)
    assert [rule["ExpirationInDays"] for rule in rules if rule.get("Prefix") == "uploads/"] == [1]
