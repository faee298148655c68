"""Unique project slugs: colliding paths, macros given the full path, old databases, replica races."""

import asyncio
import threading
from urllib.parse import quote

import httpx
import pytest
from mcp import Client

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.ids import stable_id
from chalicelib.security import auth
from chalicelib.store import db
from chalicelib.tools import tools_by_name
from chalicelib.tools.projects import distinct_slug, misspelled_keys, settle_slug

from .sql import sql
from .turso import turso_server

TOOLS = tools_by_name()
PATHS = ("/home/me/shop", "/home/me/Shop", "/home/me-shop")  # one plain slug: home-me-shop


def suffixed(path: str) -> str:
    return distinct_slug("home-me-shop", stable_id("project", path))


@pytest.mark.both_backends
def test_colliding_paths_get_unique_stable_slugs(call):
    slugs = [call("ensure_project", human_key=path)["slug"] for path in PATHS]
    assert slugs == ["home-me-shop", suffixed("/home/me/Shop"), suffixed("/home/me-shop")]
    assert len(set(slugs)) == 3 and all(len(slug) == len("home-me-shop-") + 6 for slug in slugs[1:])
    # Stable: asking again, in any order, gives the same slugs.
    assert [call("ensure_project", human_key=path)["slug"] for path in reversed(PATHS)] == slugs[::-1]
    for path, slug in zip(PATHS, slugs):
        assert call("get_project", project_key=slug)["human_key"] == path
        call("register_agent", project_key=slug, program="p", model="m", name="BlueLake")
        call("set_contact_policy", project_key=slug, agent_name="BlueLake", policy="open")
    # Name@slug reaches the right project's agent, from each of the others.
    call("register_agent", project_key=slugs[0], program="p", model="m", name="RedStone")
    for slug in slugs[1:]:
        call("send_message", project_key=slugs[0], sender_name="RedStone", to=[f"BlueLake@{slug}"], subject=slug, body_md="x")
    for path, slug in zip(PATHS, slugs):
        inbox = call("fetch_inbox", project_key=slug, agent_name="BlueLake")["messages"]
        assert [m["subject"] for m in inbox] == ([] if slug == slugs[0] else [slug])
        assert call("whois", project_key=path, agent_name="BlueLake")["project"] == slug


@pytest.mark.both_backends
def test_paths_made_first_to_take_a_projects_slugs_leave_it_one_of_its_own(call):
    """QA, session 30: the last resort (the plain slug and the whole id) was not checked, and
    anyone can hash a path: three projects made first gave the victim's the slug of one of them,
    which then answered for it everywhere (its agents, its archive folder, a scope by slug)."""
    victim = "/srv/app"
    key = stable_id("project", victim)
    squatters = ("/srv-app", f"{victim}-{key & 0xFFFFFF:06x}", f"{victim}-{key:016x}")
    taken = [call("ensure_project", human_key=path)["slug"] for path in squatters]
    slug = call("ensure_project", human_key=victim)["slug"]
    assert slug == f"srv-app--{key:016x}" and slug not in taken
    assert call("get_project", project_key=slug)["human_key"] == victim
    call("register_agent", project_key=slug, program="p", model="m", name="BlueLake")
    assert [agent["name"] for agent in call("list_agents", project_key=victim)["agents"]] == ["BlueLake"]


@pytest.mark.both_backends
def test_one_directory_spelled_in_either_unicode_form_is_one_project(call, settings):
    """macOS reports `é` as `e` and a combining accent (NFD), other systems as one character (NFC):
    two projects for one directory, whose agents never saw each other's mail; and the slug left the
    letter out (tmp-caf)."""
    composed, decomposed = "/tmp/caf\u00e9", "/tmp/cafe\u0301"
    made = call("ensure_project", human_key=decomposed)
    assert (made["human_key"], made["slug"]) == (composed, "tmp-cafe")
    assert call("ensure_project", human_key=composed)["slug"] == "tmp-cafe"
    assert call("get_project", project_key=decomposed)["slug"] == "tmp-cafe"
    assert [p["slug"] for p in call("list_projects")["projects"]] == ["tmp-cafe"]
    # a project an older build stored under the decomposed spelling is found by either
    with sql(settings) as conn:
        conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'tmp-old', ?, '2026-01-01T00:00:00+00:00')",
                     (stable_id("project", "/tmp/olo\u0301"), "/tmp/olo\u0301"))
    for spelling in ("/tmp/olo\u0301", "/tmp/ol\u00f3"):
        assert call("ensure_project", human_key=spelling)["slug"] == "tmp-old"
    with sql(settings) as conn:
        assert misspelled_keys(conn) == []  # doctor names none: each answers by its path


@pytest.mark.both_backends
def test_a_project_an_older_build_stored_decomposed_is_in_the_scope_listing_its_path(call, settings):
    """A scope's paths are composed (auth.scoped) and were compared with the stored key as a
    string: a credential listing the path, in either spelling, reached nothing (QA, session 32)."""
    decomposed = "/tmp/cafe\u0301"
    with sql(settings) as conn:  # the row as a build before 53483e6 stored it
        conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'tmp-caf', ?, '2026-01-01T00:00:00+00:00')",
                     (stable_id("project", decomposed), decomposed))
    call("ensure_product", product_key="p")
    call("products_link", product_key="p", project_key="tmp-caf")
    for listed in ("/tmp/caf\u00e9", decomposed):
        who = auth.scoped("bearer", f"bearer:{ascii(listed)}", [listed], "writer")

        def as_(tool, **arguments):
            return invoke.call(TOOLS[tool], arguments, settings, who)

        assert as_("get_project", project_key="/tmp/caf\u00e9").slug == "tmp-caf"
        assert [project.slug for project in as_("list_projects").projects] == ["tmp-caf"]
        [product] = as_("list_products").products
        assert [project.slug for project in product.projects] == ["tmp-caf"]
        assert [project.slug for project in as_("get_product", product_key="p").projects] == ["tmp-caf"]


def test_macros_work_with_the_full_path_of_a_colliding_project(call):
    for path in PATHS:
        started = call("macro_start_session", human_key=path, program="p", model="m", agent_name="GreenCastle",
                       file_reservation_paths=["src/app.py"])
        slug = started["project"]["slug"]
        assert started["project"]["human_key"] == path and started["agent"]["project"] == slug
        assert [r["path_pattern"] for r in started["file_reservations"]["granted"]] == ["src/app.py"]
        # Each project has its own GreenCastle, holding its own reservation (no conflict across projects).
        assert started["file_reservations"]["conflicts"] == []
        call("send_message", project_key=slug, sender_name="GreenCastle", to=["GreenCastle"], subject=f"to {path}",
             body_md="self", thread_id="T-1")
        prepared = call("macro_prepare_thread", project_key=slug, thread_id="T-1", program="p", model="m",
                        agent_name="GreenCastle")
        assert prepared["thread"]["message_count"] == 1 and prepared["agent"]["project"] == slug
        assert [m["subject"] for m in prepared["inbox"]] == [f"to {path}"]
        cycle = call("macro_file_reservation_cycle", project_key=slug, agent_name="GreenCastle", paths=["docs/*"],
                     auto_release=True)
        assert cycle["released"]["released"] == 1


@pytest.mark.both_backends
@pytest.mark.fresh_database
def test_an_old_database_with_colliding_slugs_migrates_forward(settings, monkeypatch):
    every = db.migrations()
    monkeypatch.setattr(db, "migrations", lambda: [m for m in every if m[0] < "0012"])
    db.migrate(settings)
    old = {path: stable_id("project", path) for path in PATHS}
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        for number, (path, key) in enumerate(old.items()):  # what the old ensure_project stored
            conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'home-me-shop', ?, ?)",
                         (key, path, f"2026-01-0{number + 1}T00:00:00.000000Z"))
        agent = stable_id("agent", old["/home/me/Shop"], "bluelake")
        conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                     " VALUES (?, ?, 'BlueLake', 'p', 'm', '2026-01-02', '2026-01-02')", (agent, old["/home/me/Shop"]))
        conn.execute("INSERT INTO archive_outbox (id, project, kind, entity_id, payload, created_ts)"
                     " VALUES (1, 'home-me-shop', 'agent', ?, '{\"kind\": \"agent\", \"project\": \"home-me-shop\"}', '2026')",
                     (agent,))
    monkeypatch.setattr(db, "migrations", lambda: every)
    db._migrated.discard(settings.database_url)
    db.migrate(settings)
    with db.connection(settings) as conn:
        slugs = dict(conn.execute("SELECT human_key, slug FROM projects").fetchall())
        outbox = tuple(conn.execute("SELECT project, payload FROM archive_outbox").fetchone())
    assert slugs == {"/home/me/shop": "home-me-shop", "/home/me/Shop": suffixed("/home/me/Shop"),
                     "/home/me-shop": suffixed("/home/me-shop")}
    assert outbox[0] == suffixed("/home/me/Shop") and f'"project":"{outbox[0]}"' in outbox[1].replace(" ", "")
    # The same slugs ensure_project now gives, and every project answers by its slug.
    for path, slug in slugs.items():
        assert invoke.call(TOOLS["ensure_project"], {"human_key": path}, settings).slug == slug
        assert invoke.call(TOOLS["get_project"], {"project_key": slug}, settings).human_key == path
    assert invoke.call(TOOLS["whois"], {"project_key": suffixed("/home/me/Shop"), "agent_name": "BlueLake"}, settings).name == "BlueLake"


def test_a_slug_two_replicas_gave_at_once_is_settled(tmp_path):
    """What each replica saw before its push is forced here: both projects hold the plain slug."""
    with turso_server(tmp_path) as primary:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", turso_sync_url=primary.url)
        first, second = (stable_id("project", path) for path in PATHS[:2])
        with db.connection(settings) as conn:
            with db.transaction(conn, write=True):
                for key, path, ts in ((first, PATHS[0], "2026-01-01"), (second, PATHS[1], "2026-01-02")):
                    conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'home-me-shop', ?, ?)",
                                 (key, path, ts))
            # While shared, the slug names the older one, on every replica alike.
            assert invoke.call(TOOLS["get_project"], {"project_key": "home-me-shop"}, settings).human_key == PATHS[0]
            # The older one, asked again (not made by this call), keeps the slug it answered before.
            assert settle_slug(conn, first, created=False) is None
            # The younger one leaves it, even when not made by this call (a settle that never ran).
            assert settle_slug(conn, second, created=False) == suffixed(PATHS[1])
            assert settle_slug(conn, second, created=False) is None  # settled: nothing shared any more
        fresh = Settings(database_url=f"sqlite:///{tmp_path}/b.db", turso_sync_url=primary.url)
        assert [p.slug for p in invoke.call(TOOLS["list_projects"], {}, fresh).projects] == ["home-me-shop", suffixed(PATHS[1])]


def test_replicas_racing_to_create_colliding_projects_end_with_unique_answered_slugs(tmp_path):
    rounds = 8
    with turso_server(tmp_path) as primary:
        replicas = [Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url) for name in "ab"]
        for settings in replicas:
            invoke.call(TOOLS["list_projects"], {}, settings)  # bootstrapped and migrated before the race
        answered: dict[str, str] = {}
        for number in range(rounds):
            barrier = threading.Barrier(2)

            def create(settings, path):
                barrier.wait()
                answered[path] = invoke.call(TOOLS["ensure_project"], {"human_key": path}, settings).slug

            paths = (f"/race/r{number}/shop", f"/race/r{number}/Shop")
            threads = [threading.Thread(target=create, args=pair) for pair in zip(replicas, paths)]
            [thread.start() for thread in threads]
            [thread.join(30) for thread in threads]
        assert len(answered) == 2 * rounds and len(set(answered.values())) == 2 * rounds
        fresh = Settings(database_url=f"sqlite:///{tmp_path}/fresh.db", turso_sync_url=primary.url)
        stored = {p.human_key: p.slug for p in invoke.call(TOOLS["list_projects"], {}, fresh).projects}
        assert stored == answered  # every answered slug is the project's slug for good


def test_unique_slugs_through_the_real_server_rest_and_mcp(any_server):
    client = httpx.Client(base_url=any_server, timeout=30)

    def post(tool: str, **body):
        response = client.post(f"/api/{tool}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    base = f"/srv/{any_server.rsplit(':', 1)[1]}"  # a module-scoped server: paths of this test only
    paths = (f"{base}/Shop", f"{base}/shop", f"{base}-shop")
    started = [post("macro_start_session", human_key=path, program="p", model="m", agent_name="BlueLake") for path in paths]
    slugs = [s["project"]["slug"] for s in started]
    assert len(set(slugs)) == 3 and slugs[0] == base.strip("/").replace("/", "-") + "-shop"
    for slug in slugs:
        post("set_contact_policy", project_key=slug, agent_name="BlueLake", policy="open")
    post("send_message", project_key=slugs[0], sender_name="BlueLake", to=[f"BlueLake@{slugs[2]}"], subject="cross", body_md="x")
    assert [m["subject"] for m in post("fetch_inbox", project_key=slugs[2], agent_name="BlueLake")["messages"]] == ["cross"]
    assert post("fetch_inbox", project_key=slugs[1], agent_name="BlueLake")["messages"] == []

    async def resources():
        async with Client(f"{any_server}/mcp", mode="legacy") as mcp:
            return [await mcp.read_resource(f"resource://project/{quote(slug, safe='')}") for slug in slugs]

    import json

    for path, result in zip(paths, asyncio.run(resources())):
        assert json.loads(result.contents[0].text)["human_key"] == path


def test_a_session_that_leaves_a_shared_slug_takes_its_answer_and_archive_work_along(tmp_path):
    """macro_start_session's settle step, with the rival forced in between the write and the settle."""
    import json as json_module

    from chalicelib.tools.macros import MacroStartSessionInput, macro_start_session, settle_session

    with turso_server(tmp_path) as primary:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", turso_sync_url=primary.url)
        args = MacroStartSessionInput(human_key=PATHS[1], program="p", model="m", agent_name="BlueLake",
                                      file_reservation_paths=["src/*"])
        with db.connection(settings) as conn:
            with db.transaction(conn, write=True):
                started = macro_start_session(conn, args)
                assert started.project.slug == "home-me-shop"  # free when it looked
            with db.transaction(conn, write=True):  # another replica's project, pushed meanwhile
                conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'home-me-shop', ?, ?)",
                             (stable_id("project", PATHS[0]), PATHS[0], "2026-01-01T00:00:00.000000Z"))
            settled = settle_session(conn, args, started)
            rows = conn.execute("SELECT project, kind, payload FROM archive_outbox ORDER BY id").fetchall()
        slug = suffixed(PATHS[1])
        assert (settled.project.slug, settled.agent.project) == (slug, slug)
        assert sorted(kind for _, kind, _ in rows) == ["agent", "project", "reservation"]
        assert all(project == slug and json_module.loads(payload)["project"] == slug for project, _, payload in rows)
        assert invoke.call(TOOLS["whois"], {"project_key": slug, "agent_name": "BlueLake"}, settings).project == slug
        assert invoke.call(TOOLS["get_project"], {"project_key": "home-me-shop"}, settings).human_key == PATHS[0]
