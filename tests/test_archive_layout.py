"""The archive's layout 2 (a folder per second), its migration from flat month folders,
repacking, and project identity (project.json, foreign files, restore by human key); on real
SQLite databases and real git repositories, read back with the `git` CLI."""

import base64
import json
import os
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from chalicelib.archive import rebuild
from chalicelib.archive.verify import is_copy, verify as verify_archive
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.render import parse_document, render
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.ids import stable_id
from chalicelib.store import db
from chalicelib.transports.cli import cli


def git(repo, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db", archive_dir=tmp_path / "archive", archive_retry_seconds=0)


def run(settings, *args, database_url=None):
    return CliRunner().invoke(cli, ["--database-url", database_url or settings.database_url, *args],
                              env={"ARCHIVE_DIR": str(settings.archive_dir)})


def message(number: int, seconds: float) -> dict:
    created = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return {"kind": "message", "project": "work-demo", "project_human_key": "/work/demo", "id": str(10**15 + number),
            "thread_id": "t", "subject": f"Message {number}", "body_md": "x", "sender": "BlueLake", "to": ["GreenCastle"],
            "cc": [], "bcc": [], "importance": "normal", "ack_required": False, "created_ts": created.isoformat()}


def changed_tree_bytes(repo) -> tuple[int, int]:
    """(number, total size) of the trees the last commit wrote."""
    lines = git(repo, "diff-tree", "-r", "-t", "--no-commit-id", "HEAD~1", "HEAD").splitlines()
    trees = [line.split()[3] for line in lines if line.split()[1] == "tree"]
    trees.append(git(repo, "rev-parse", "HEAD^{tree}").strip())
    return len(trees), sum(int(git(repo, "cat-file", "-s", tree)) for tree in trees)


def test_one_message_rewrites_the_same_few_small_trees_whatever_the_archive_holds(tmp_path):
    sizes = {}
    for count in (100, 2000):
        path = tmp_path / f"archive-{count}"
        with GitArchive(path, bare=True) as archive:
            entries = [message(n, n * 0.25) for n in range(count)]  # 4 a second: 2,000 span 8 minutes of one hour
            for at in range(0, count, 500):
                archive.apply(entries[at : at + 500])
            archive.apply([message(count, count * 0.25)])
        sizes[count] = changed_tree_bytes(path)
        # no tree on the way has more than 60 entries (seconds, minutes) however many messages there are
        for folder in ("projects/work-demo/messages/2026/11/24/07", "projects/work-demo/agents/GreenCastle/inbox/2026/11/24/07"):
            assert len(git(path, "ls-tree", f"HEAD:{folder}").splitlines()) <= 60
        git(path, "fsck", "--strict")
    (trees_small, bytes_small), (trees_large, bytes_large) = sizes[100], sizes[2000]
    assert trees_small == trees_large  # the same paths: messages/, outbox/ and inbox/ down to their second
    assert bytes_large < 1.5 * bytes_small and bytes_large < 8000  # flat month folders: ~20x more at 2,000


def test_maintain_merges_small_packs_and_git_still_reads_every_object(tmp_path):
    path = tmp_path / "archive"
    with GitArchive(path, bare=True) as archive:
        for n in range(40):
            archive.apply([message(n, n)])
        objects = git(path, "rev-list", "--objects", "--all")
        assert archive.pack_count() == 40
        assert archive.maintain() >= 2
        assert archive.pack_count() < 10
        assert archive.maintain() == 0  # the sizes form a geometric series: nothing more to merge
        archive.apply([message(99, 99)])  # and it keeps writing
        assert len(archive.files()) == 41 * 3 + 1  # canonical, outbox, inbox; project.json
    assert sorted(git(path, "rev-list", "--objects", "HEAD~1").splitlines()) == sorted(objects.splitlines())
    git(path, "fsck", "--strict")
    assert "packs: " in git(path, "count-objects", "-v")


def test_a_commit_looks_its_trees_up_in_the_newest_packs_first(tmp_path, monkeypatch):
    # dulwich tries packs in the order it found them: a commit's trees (written by the commits just
    # before) were looked for in every older pack's index first, a cost that grew with the archive.
    from dulwich.pack import Pack

    path = tmp_path / "archive"
    with GitArchive(path, bare=True) as archive:
        for n in range(40):
            archive.apply([message(n, n)])
    tries, get_raw = [], Pack.get_raw
    monkeypatch.setattr(Pack, "get_raw", lambda pack, sha: tries.append(sha) or get_raw(pack, sha))
    with GitArchive(path, bare=True) as archive:  # opened again: no tree cached, 40 packs
        assert archive.pack_count() == 40
        archive.apply([message(40, 40)])
        archive.apply([message(41, 41)])
    looked_up = set(tries)
    assert looked_up and len(tries) <= 2 * len(looked_up), (len(tries), len(looked_up))  # random order: ~20 tries each
    git(path, "fsck", "--strict")


def test_a_walk_of_the_archive_looks_each_object_up_in_the_pack_it_last_found_one_in(tmp_path, monkeypatch):
    # verify and restore read every tree and file, most of them in the oldest, merged pack, which
    # newest first put last: every newer pack's index was read before it, for each of them.
    from dulwich.object_store import PackBasedObjectStore
    from dulwich.pack import Pack

    path = tmp_path / "archive"
    with GitArchive(path, bare=True) as archive:
        for n in range(40):
            archive.apply([message(n, n)])
        archive.repack()
        for n in range(40, 43):  # three newer packs
            archive.apply([message(n, n)])
    lookups, tries = [], []
    lookup, get_raw = PackBasedObjectStore._lookup_in_packs, Pack.get_raw
    monkeypatch.setattr(PackBasedObjectStore, "_lookup_in_packs", lambda store, find: lookups.append(1) or lookup(store, find))
    monkeypatch.setattr(Pack, "get_raw", lambda pack, sha: tries.append(sha) or get_raw(pack, sha))
    with GitArchive(path, bare=True) as archive:
        assert archive.pack_count() == 4
        assert len(archive.files()) == 43 * 3 + 1
    assert len(tries) < 1.2 * len(lookups), (len(tries), len(lookups))  # newest first: 3.4 tries a lookup


def test_a_due_maintenance_merges_again_while_commits_outpace_one_merge(tmp_path, monkeypatch):
    # One merge takes at most MERGE_LIMIT (32 MB) of packs: commits that wrote more between two
    # maintenances left packs piling up (123 at 1M messages), and lookups go through them all.
    from chalicelib.archive import gitrepo

    monkeypatch.setattr(gitrepo, "MAINTAIN_EVERY", 36)
    path = tmp_path / "archive"
    with GitArchive(path, bare=True) as archive:
        for n in range(36):  # ~1 MB a commit: a body that does not compress
            archive.apply([{**message(n, n), "body_md": base64.b64encode(os.urandom(1_000_000)).decode()}])
        assert archive.maintain_if_due() >= 34  # one merge: ~31 packs, leaving 6
        assert archive.pack_count() <= 3
        for n in range(36, 72):  # and as `archive rebuild` and `migrate` leave it: merged until none is due
            archive.apply([{**message(n, n), "body_md": base64.b64encode(os.urandom(1_000_000)).decode()}])
        assert archive.repack() >= 34 and archive.pack_count() <= 4
        assert archive.repack() == 0
    git(path, "fsck", "--strict")


def test_the_worker_repacks_every_maintain_every_commits(call, project, settings, monkeypatch):
    from chalicelib.archive import gitrepo

    monkeypatch.setattr(gitrepo, "MAINTAIN_EVERY", 4)
    with GitArchive.local(settings) as archive:
        for n in range(9):
            call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"n{n}", body_md="x")
            drain(settings, archive)
        assert archive.commits == 9 and archive.maintained_at == 8
        assert archive.pack_count() < 9
    git(settings.archive_dir, "fsck", "--strict")


# Migration of an archive of the first layout


def flatten(files: dict[str, bytes]) -> dict[str, bytes]:
    """What the first layout wrote: message files in YYYY/MM, no project.json."""
    flat = {}
    for path, content in files.items():
        parts = path.split("/")
        if path.endswith(".md"):
            parts = parts[:-7] + parts[-7:-5] + parts[-1:]
        if not path.endswith("/project.json"):
            flat["/".join(parts)] = content
    return flat


def old_archive(settings, tmp_path, entries) -> None:
    """A bare archive of the first layout, written by the git CLI: documents without
    project_human_key in flat month folders."""
    work = tmp_path / "old-work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    for entry in entries:
        older = entry if entry["kind"] == "agent" else {key: value for key, value in entry.items() if key != "project_human_key"}
        for path, content in flatten(render(older)).items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(content)
    env = ["-c", "user.name=Agent Mail", "-c", "user.email=agent-mail@localhost"]
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), *env, "commit", "-q", "-m", "archive: first layout"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(settings.archive_dir)], check=True)


def all_entries(settings) -> list[dict]:
    with db.connection(settings) as conn:
        return [*rebuild.other_entries(conn), *rebuild.message_entries(conn)]


def send_some(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], cc=["RedStone"], subject="One", body_md="1")
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], bcc=["RedStone"], subject="Two",
         body_md="2", thread_id="T-1")
    call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=["docs/*.md"])


def test_an_archive_of_the_first_layout_is_verified_migrated_and_restored(call, project, settings, tmp_path):
    send_some(call, project)
    old_archive(settings, tmp_path, all_entries(settings))
    repo = settings.archive_dir
    flat = [path for path in git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines() if path.endswith(".md")]
    assert len(flat) == 4 + 4 and all(len(path.split("/")) in (6, 8) for path in flat)  # YYYY/MM/{file}

    result = run(settings, "archive", "verify")  # readers understand the first layout as it is: it lacks only project.json
    assert result.exit_code == 1 and json.loads(result.stdout) == {
        "missing": [f"projects/{project}/project.json"], "unexpected": [], "different": [], "foreign": []}

    result = run(settings, "archive", "migrate")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("8 message files moved")  # two messages: canonical, outbox and two inbox copies each
    assert git(repo, "log", "-1", "--format=%s").startswith("archive: layout 2, 8 message files moved")
    moved = git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert "layout.json" in moved
    for old in flat:
        name = old.rsplit("/", 1)[1]
        new = next(path for path in moved if path.endswith("/" + name) and path.split("/")[:-7] == old.split("/")[:-3])
        assert new.split("/")[-7:-1] == [name[:4], name[5:7], name[8:10], name[11:13], name[14:16], name[17:19]]
        assert git(repo, "rev-parse", f"HEAD~1:{old}") == git(repo, "rev-parse", f"HEAD:{new}")  # the same blob: only trees moved
    git(repo, "fsck", "--strict")
    assert run(settings, "archive", "migrate").output.startswith("0 message files moved")  # once is enough

    # new mail goes to the new layout next to the old documents; verify and restore read both
    call("send_message", project_key=project, sender_name="RedStone", to=["BlueLake"], subject="Three", body_md="3")
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    result = run(settings, "archive", "verify")
    assert result.exit_code == 0, result.output
    restored = f"sqlite:///{tmp_path}/restored.db"
    result = run(settings, "db", "restore-from-archive", database_url=restored)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"projects": 1, "agents": 3, "messages": 3, "file_reservations": 1,
                                          "contacts": 0, "marks": 0, "products": 0}
    with db.connection(settings) as old, db.connection(Settings(database_url=restored)) as new:
        assert list(rebuild.message_entries(new)) == list(rebuild.message_entries(old))


def test_the_worker_migrates_an_old_archive_when_it_starts(call, project, settings, tmp_path):
    import threading

    from chalicelib.archive.worker import work

    send_some(call, project)
    old_archive(settings, tmp_path, all_entries(settings))
    stopping = threading.Event()
    stopping.set()  # start, migrate, stop
    work(settings, stopping)
    assert "layout.json" in git(settings.archive_dir, "ls-tree", "--name-only", "HEAD")


# Project identity: two projects whose slugs collide today


@pytest.fixture
def two_shops(call, settings):
    """/home/me/shop and /home/me/Shop under the one slug home-me-shop, as databases made before
    slugs were unique hold them: the archive must not mix them either way."""
    for key in ("/home/me/shop", "/home/me/Shop"):
        call("ensure_project", human_key=key)
        give_unique_slug(settings, key, "home-me-shop")  # the slug both had then
        for name in ("BlueLake", "GreenCastle"):
            call("register_agent", project_key=key, program=f"prog {key}", model="m", name=name)
            call("set_contact_policy", project_key=key, agent_name=name, policy="open")
        call("send_message", project_key=key, sender_name="BlueLake", to=["GreenCastle"], subject=f"From {key}", body_md=key)
    return "/home/me/shop", "/home/me/Shop"


def give_unique_slug(settings, human_key: str, slug: str) -> None:
    """What c-identity's migration does to the second project of a colliding slug."""
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("UPDATE projects SET slug = ? WHERE human_key = ?", (slug, human_key))


def test_a_second_project_is_never_written_into_the_folder_of_the_first(call, two_shops, settings):
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        owner = json.loads(archive.read("projects/home-me-shop/project.json"))
        profiles = {path: json.loads(content) for path, content in archive.files().items() if path.endswith("profile.json")}
    made = call("get_project", project_key="/home/me/shop")["created_ts"]
    assert owner == {"human_key": "/home/me/shop", "slug": "home-me-shop", "created_ts": made, "version": owner["version"]}
    assert {profile["program"] for profile in profiles.values()} == {"prog /home/me/shop"}  # not overwritten by Shop's
    status = call("archive_status")
    assert status["failed"] == 5  # Shop's two profiles (each written twice: registered, opened) and its message: kept, never mixed in
    with db.connection(settings) as conn:
        errors = {row[0] for row in conn.execute("SELECT last_error FROM archive_outbox WHERE state = 'pending'")}
    assert all("holds more than one project" in error for error in errors)
    documents = [parse_document(content) for path, content in archive_files(settings).items() if "/messages/" in path]
    assert [document["project_human_key"] for document in documents] == ["/home/me/shop"]


def git_show(repo, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{path}"], check=True, capture_output=True).stdout


def archive_files(settings) -> dict[str, bytes]:
    with GitArchive.local(settings) as archive:
        return archive.files()


def test_with_unique_slugs_each_project_has_its_own_folder_and_restore_keeps_them_apart(call, two_shops, settings, tmp_path):
    give_unique_slug(settings, "/home/me/Shop", "home-me-shop-2")
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        rebuild.rebuild(conn, archive)
        assert json.loads(archive.read("projects/home-me-shop-2/project.json"))["human_key"] == "/home/me/Shop"
        assert json.loads(archive.read("projects/home-me-shop-2/agents/BlueLake/profile.json"))["program"] == "prog /home/me/Shop"
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
    restored = f"sqlite:///{tmp_path}/restored.db"
    result = run(settings, "db", "restore-from-archive", database_url=restored)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"projects": 2, "agents": 4, "messages": 2, "file_reservations": 0,
                                          "contacts": 0, "marks": 0, "products": 0}
    with db.connection(settings) as old, db.connection(Settings(database_url=restored)) as new:
        query = "SELECT id, slug, human_key FROM projects ORDER BY human_key"
        assert [tuple(row) for row in new.execute(query)] == [tuple(row) for row in old.execute(query)]
        assert list(rebuild.message_entries(new)) == list(rebuild.message_entries(old))
        agents = "SELECT p.human_key, a.name, a.program FROM agents a JOIN projects p ON p.id = a.project_id ORDER BY 1, 2"
        assert [tuple(row) for row in new.execute(agents)] == [tuple(row) for row in old.execute(agents)]


def test_verify_reports_the_files_of_another_project_in_a_folder(call, two_shops, settings, tmp_path):
    """The archive the slug collision made before this release: both projects in one folder,
    Shop's profiles over shop's. Once the database gives Shop its own slug, verify says which
    files are foreign (and `archive rebuild` writes Shop's own folder)."""
    old_archive(settings, tmp_path, all_entries(settings))  # both under projects/home-me-shop/, first layout
    give_unique_slug(settings, "/home/me/Shop", "home-me-shop-2")
    result = run(settings, "archive", "verify")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    shop_message = next(path for path in problems["foreign"] if "/messages/" in path)
    assert "from-home-me-shop" in shop_message and shop_message.startswith("projects/home-me-shop/messages/")
    profiles = [f"projects/home-me-shop/agents/{name}/profile.json" for name in ("BlueLake", "GreenCastle")]
    overwritten = [path for path in profiles if b"/home/me/Shop" in git_show(settings.archive_dir, path)]
    assert overwritten  # the collision's damage: Shop's profile where shop's belongs
    assert sorted(path for path in problems["foreign"] if path.endswith("profile.json")) == overwritten
    missing = [path for path in problems["missing"] if not path.endswith("/project.json")]  # the first layout had none
    [message] = [path for path in missing if "/messages/" in path]
    assert message.startswith("projects/home-me-shop-2/messages/")
    copies = [path for path in missing if is_copy(path)]  # its sender's and recipient's, in Shop's own folder too
    assert sorted(path.split("/")[3:5] for path in copies) == [["BlueLake", "outbox"], ["GreenCastle", "inbox"]]
    assert {path.rsplit("/", 1)[1] for path in copies} == {message.rsplit("/", 1)[1]}
    assert [path for path in missing if path != message and path not in copies] == [
        f"projects/home-me-shop-2/agents/{name}/profile.json" for name in ("BlueLake", "GreenCastle")]  # (theirs are foreign)
    assert problems["unexpected"] == [] and problems["different"] == []


def test_a_slug_of_the_last_resort_has_its_archive_folder(call, settings):
    """free_slug's last resort (plain slug, `--`, the whole id) is a folder name the archive takes:
    it refused every slug with two `-` in a row."""
    victim = "/srv/app"
    key = stable_id("project", victim)
    for path in ("/srv-app", f"{victim}-{key & 0xFFFFFF:06x}", f"{victim}-{key:016x}", victim):
        slug = call("ensure_project", human_key=path)["slug"]
    call("register_agent", project_key=victim, program="p", model="m", name="BlueLake")
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        rebuild.rebuild(conn, archive)
        assert json.loads(archive.read(f"projects/{slug}/project.json"))["human_key"] == victim
        assert json.loads(archive.read(f"projects/{slug}/agents/BlueLake/profile.json"))["program"] == "p"
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
