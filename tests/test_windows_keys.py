"""One Windows directory is one project, however a client spells its path (docs/identity.md,
"Windows paths"): new projects, old databases (migration 0031), the archive and its restore."""

import asyncio
import json
import sqlite3

import httpx
import pytest
from mcp import Client

from chalicelib import invoke
from chalicelib.archive import outbox
from chalicelib.archive.restore import restore as restore_archive
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.ids import stable_id
from chalicelib.ops import doctor
from chalicelib.security import auth
from chalicelib.store import db
from chalicelib.tools import tools_by_name
from chalicelib.tools.projects import distinct_slug, misspelled_keys

from .servers import tool_caller
from .sql import migrated_until

TOOLS = tools_by_name()
SHOP = "C:\\Users\\me\\shop"  # the one spelling: what Windows reports
SPELLINGS = (SHOP, "C:/Users/me/shop", "c:\\Users\\me\\shop", "C:\\Users\\me\\.\\shop", "C:\\Users\\me\\x\\..\\shop\\")


@pytest.mark.both_backends
def test_every_spelling_of_a_windows_path_is_one_project(call):
    projects = [call("ensure_project", human_key=key) for key in SPELLINGS]
    assert {(p["slug"], p["human_key"]) for p in projects} == {("c-users-me-shop", SHOP)}
    call("register_agent", project_key=SPELLINGS[1], program="p", model="m", name="BlueLake")
    call("register_agent", project_key=SPELLINGS[2], program="p", model="m", name="GreenCastle")
    call("set_contact_policy", project_key=SPELLINGS[4], agent_name="GreenCastle", policy="open")
    call("send_message", project_key=SPELLINGS[3], sender_name="BlueLake", to=["GreenCastle"], subject="hi", body_md="x")
    for key in SPELLINGS:
        assert [m["subject"] for m in call("fetch_inbox", project_key=key, agent_name="GreenCastle")["messages"]] == ["hi"]
    # The rest of the path keeps its case, as on POSIX; a drive root stays a root.
    assert call("ensure_project", human_key="c:/Users/me/Shop")["human_key"] == "C:\\Users\\me\\Shop"
    assert call("ensure_project", human_key="d:/")["human_key"] == "D:\\"
    assert [p["human_key"] for p in call("list_projects")["projects"]] == [SHOP, "C:\\Users\\me\\Shop", "D:\\"]


def test_a_credential_scoped_to_any_spelling_reaches_the_project(call, settings):
    call("ensure_project", human_key=SHOP)
    call("ensure_project", human_key="C:\\Users\\me\\other")
    scoped = auth.scoped("bearer", "shop-writer", "c:/Users/me/shop/", "writer")
    listed = invoke.call(TOOLS["list_projects"], {}, settings, scoped).projects
    assert [p.human_key for p in listed] == [SHOP]
    assert invoke.call(TOOLS["get_project"], {"project_key": "C:/Users/me/shop"}, settings, scoped).slug == "c-users-me-shop"


def test_every_spelling_is_one_project_through_the_server_rest_and_mcp(server):
    client = httpx.Client(base_url=server, timeout=30)

    def post(tool: str, **body):
        response = client.post(f"/api/{tool}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    slugs = {post("ensure_project", human_key=key)["slug"] for key in SPELLINGS}
    assert slugs == {"c-users-me-shop"}

    async def sessions():
        async with Client(f"{server}/mcp", mode="legacy") as mcp:
            call = tool_caller(mcp)
            started = [await call("macro_start_session", human_key=key, program="p", model="m", agent_name=name)
                       for key, name in ((SPELLINGS[1], "BlueLake"), (SPELLINGS[2], "GreenCastle"))]
            await call("set_contact_policy", project_key=SPELLINGS[4], agent_name="GreenCastle", policy="open")
            await call("send_message", project_key=SPELLINGS[3], sender_name="BlueLake", to=["GreenCastle"], subject="hi",
                       body_md="x")
            return started

    started = asyncio.run(sessions())
    assert {(s["project"]["slug"], s["project"]["human_key"]) for s in started} == {("c-users-me-shop", SHOP)}
    inbox = post("fetch_inbox", project_key=SPELLINGS[4], agent_name="GreenCastle")["messages"]
    assert [m["subject"] for m in inbox] == ["hi"]
    assert [p["human_key"] for p in post("list_projects")["projects"]] == [SHOP]


def old_project(conn, human_key: str, slug: str, created_ts: str, agent: str | None = None) -> int:
    """A project (and an agent) as the code before migration 0031 stored them: the key as typed."""
    key = stable_id("project", human_key)
    conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, ?)", (key, slug, human_key, created_ts))
    if agent:
        conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                     " VALUES (?, ?, ?, 'p', 'm', ?, ?)", (stable_id("agent", key, agent.lower()), key, agent, created_ts, created_ts))
    return key


@pytest.mark.both_backends
@pytest.mark.fresh_database
def test_an_old_database_takes_the_one_spelling_and_leaves_colliding_projects_apart(settings, monkeypatch, tmp_path):
    every = db.migrations()
    monkeypatch.setattr(db, "migrations", lambda: [m for m in every if m[0] < "0031"])
    db.migrate(settings)
    old = {  # human key -> slug; created in this order
        SHOP: "c-users-me-shop",  # already the one spelling
        "d:/work/api": "d-work-api",  # alone: takes it
        "E:/x//app": "e-x-app",  # the older of two spellings: takes it ...
        "e:\\x\\app": distinct_slug("e-x-app", stable_id("project", "e:\\x\\app")),  # ... and the younger keeps its own
        "F:/y": "f-y",  # older, but F:\y below holds the spelling already: keeps its own
        "F:\\y": distinct_slug("f-y", stable_id("project", "F:\\y")),
    }
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        ids = {key: old_project(conn, key, slug, f"2026-01-0{number + 1}T00:00:00.000000Z", agent="BlueLake")
               for number, (key, slug) in enumerate(old.items())}
    monkeypatch.setattr(db, "migrations", lambda: every)
    db._migrated.discard(settings.database_url)
    db.migrate(settings)
    with db.connection(settings) as conn:
        stored = {row[0]: tuple(row[1:]) for row in conn.execute("SELECT id, human_key, slug FROM projects")}
        split = [(row["slug"], normal, holder) for row, normal, holder in misspelled_keys(conn)]
    respelled = {"d:/work/api": "D:\\work\\api", "E:/x//app": "E:\\x\\app"}
    assert stored == {ids[key]: (respelled.get(key, key), slug) for key, slug in old.items()}  # ids and slugs kept
    if settings.turso_sync_url:  # the primary has them too: a new replica starts from it
        fresh = Settings(database_url=f"sqlite:///{tmp_path}/fresh.db", turso_sync_url=settings.turso_sync_url)
        with db.connection(fresh) as conn:
            assert {row[0]: tuple(row[1:]) for row in conn.execute("SELECT id, human_key, slug FROM projects")} == stored
    younger = old["e:\\x\\app"]
    assert split == [(younger, "E:\\x\\app", "e-x-app"), (old["F:/y"], "F:\\y", old["F:\\y"])]
    finding = doctor.project_keys(settings)
    assert not finding.ok and younger + " keeps e:\\x\\app: E:\\x\\app is project e-x-app" in finding.detail

    def call(tool: str, **arguments):
        return invoke.call(TOOLS[tool], arguments, settings).model_dump(mode="json")

    for spellings, slug in (((SHOP, "c:/Users/me/shop"), "c-users-me-shop"), (("D:\\work\\api", "d:/work/api/"), "d-work-api"),
                            (("e:/x/app", "E:\\x\\app", "e:\\x\\app"), "e-x-app"), (("f:/y", "F:/y"), old["F:\\y"])):
        for key in spellings:  # the project that has the spelling, with its agent: nothing new is made
            assert call("ensure_project", human_key=key)["slug"] == slug
            assert call("whois", project_key=key, agent_name="BlueLake")["project"] == slug
    assert call("get_project", project_key=old["e:\\x\\app"])["human_key"] == "e:\\x\\app"  # the other: by its slug
    # A respelled project's ids follow from its old spelling; the inbox finds its mail by any spelling.
    call("register_agent", project_key="D:\\work\\api", program="p", model="m", name="GreenCastle")
    call("set_contact_policy", project_key="D:\\work\\api", agent_name="GreenCastle", policy="open")
    call("send_message", project_key="d:/work/api", sender_name="BlueLake", to=["GreenCastle"], subject="hi", body_md="x")
    assert [m["subject"] for m in call("fetch_inbox", project_key="D:\\work\\api", agent_name="GreenCastle")["messages"]] == ["hi"]
    started = call("macro_start_session", human_key="E:/x/app", program="p", model="m", agent_name="BlueLake")
    assert started["agent"]["project"] == "e-x-app"
    assert len(call("list_projects")["projects"]) == len(old)


def test_an_archive_written_under_the_old_spellings_is_written_on_and_restored(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/old.db", archive_dir=tmp_path / "archive", archive_retry_seconds=0)
    loser = "c:\\Users\\me\\shop"
    loser_slug = distinct_slug("c-users-me-shop", stable_id("project", loser))
    conn = migrated_until(settings.database_path, "0031")
    conn.row_factory = sqlite3.Row
    with db.transaction(conn, write=True):  # each project's profile queued under its key as then typed
        for key, slug, ts in (("C:/Users/me/shop", "c-users-me-shop", "2026-01-01"), (loser, loser_slug, "2026-01-02")):
            project = old_project(conn, key, slug, ts, agent="BlueLake")
            # later columns: NULL (the entry as the version of then queued it)
            row = conn.execute("SELECT *, NULL AS unarchived_ts, NULL AS archive_version FROM projects WHERE id = ?", (project,)).fetchone()
            agent = conn.execute("SELECT *, NULL AS archive_version FROM agents WHERE project_id = ?", (project,)).fetchone()
            outbox.record(conn, slug, "agent", agent["id"], outbox.agent_payload(row, agent))
    conn.close()
    with GitArchive.local(settings) as archive:
        drain(settings, archive)  # entries queued before migration 0031, as typed (written after it)
        invoke.call(TOOLS["send_message"], {"project_key": "C:/Users/me/shop", "sender_name": "BlueLake", "to": ["BlueLake"],
                                            "subject": "after", "body_md": "x"}, settings)  # migrated: under C:\Users\me\shop
        drain(settings, archive)
        with db.connection(settings) as conn:  # the folder's project, respelled, writes on into it
            assert [tuple(row) for row in conn.execute("SELECT kind, last_error FROM archive_outbox WHERE state != 'done'")] == []
            assert verify_archive(conn, archive)["foreign"] == []
        assert json.loads(archive.read("projects/c-users-me-shop/project.json"))["human_key"] == SHOP
        assert json.loads(archive.read("projects/c-users-me-shop/agents/BlueLake/profile.json"))["project_human_key"] == "C:/Users/me/shop"
        restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db")
        with db.connection(restored) as conn, db.transaction(conn, write=True):
            counts = restore_archive(conn, archive)
    assert counts == {"projects": 2, "agents": 2, "messages": 1, "file_reservations": 0, "contacts": 0, "marks": 0, "products": 0}
    with db.connection(restored) as conn:
        projects = dict(conn.execute("SELECT human_key, slug FROM projects").fetchall())
    assert projects == {SHOP: "c-users-me-shop", loser: loser_slug}  # still two, as in the database
    for key in SPELLINGS:
        inbox = invoke.call(TOOLS["fetch_inbox"], {"project_key": key, "agent_name": "BlueLake"}, restored).messages
        assert [m.subject for m in inbox] == ["after"]
