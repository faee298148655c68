"""Applying entries to a git repository, with dulwich (pure Python: Lambda has no git
binary, and no native library to ship). docs/archive.md says why not pygit2.

Idempotent by construction: a file's content depends only on its entry, so applying an
entry again leaves the tree unchanged, and an unchanged tree makes no commit. Each
project's entries of a batch become one commit, and all of a commit's new objects are
written as one pack (a loose object per file is what makes naive git writers slow).
"""

import os
import stat
import time
from collections import defaultdict
from pathlib import Path

from dulwich.index import index_entry_from_stat
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from .render import attachment_paths, commit_message, render

BRANCH = b"refs/heads/main"
IDENTITY = b"Agent Mail <agent-mail@localhost>"
FILE_MODE = 0o100644


class GitArchive:
    """A repository at `path` (created if missing). With a working tree, files are also
    written to disk (and the index kept in step) so that people can read them; a bare
    repository (the Lambda worker's clone) has only the git objects."""

    def __init__(self, path: Path, bare: bool = False) -> None:
        self.path = Path(path)
        if (self.path / ".git").exists() or (self.path / "HEAD").exists():
            self.repo = Repo(str(self.path))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.repo = Repo.init_bare(str(self.path)) if bare else Repo.init(str(self.path))
            self.repo.refs.set_symbolic_ref(b"HEAD", BRANCH)
        self.bare = self.repo.bare

    @classmethod
    def local(cls, settings) -> "GitArchive":
        """The local-mode archive: ARCHIVE_DIR, bare unless ARCHIVE_WORKTREE."""
        return cls(settings.archive_dir, bare=not settings.archive_worktree)

    def close(self) -> None:
        self.repo.close()

    def __enter__(self) -> "GitArchive":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def head(self) -> bytes | None:
        """The branch's commit id (hex), or None before the first commit."""
        return self.repo.refs.as_dict().get(BRANCH)

    def apply(self, entries: list[dict]) -> dict[str, str | None]:
        """Write the entries; {project: new commit id, or None if nothing changed}."""
        by_project: dict[str, list[dict]] = defaultdict(list)
        for entry in entries:
            by_project[entry["project"]].append(entry)
        return {project: self.commit(group) for project, group in by_project.items()}

    def commit(self, entries: list[dict]) -> str | None:
        files: dict[str, bytes] = {}
        for entry in entries:
            files.update(render(entry))
            for path, sha256 in attachment_paths(entry).items():
                if path not in files:
                    files[path] = attachment_content(sha256)
        parent = self.head()
        blobs: dict[bytes, Blob] = {}  # an inbox copy is often the outbox copy: one blob
        changes = {}
        for path, content in files.items():
            if content not in blobs:
                blobs[content] = Blob.from_string(content)
            changes[path.encode()] = blobs[content].id
        root = self.repo[self.repo[parent].tree] if parent else Tree()
        new_objects: list = []
        tree = with_changes(self.repo, root, changes, new_objects)
        if parent and tree.id == self.repo[parent].tree:
            return None  # everything was already there
        commit = Commit()
        commit.tree, commit.parents = tree.id, [parent] if parent else []
        commit.author = commit.committer = IDENTITY
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = commit_message(entries).encode()
        self.repo.object_store.add_objects([(obj, None) for obj in [*blobs.values(), *new_objects, commit]])
        if not self.repo.refs.set_if_equals(BRANCH, parent, commit.id):
            raise RuntimeError("the archive branch moved during a commit: is another writer running?")
        if not self.bare:
            self.write_worktree(files, {path.encode(): blobs[content].id for path, content in files.items()})
        return commit.id.decode()

    def write_worktree(self, files: dict[str, bytes], shas: dict[bytes, bytes]) -> None:
        index = self.repo.open_index()
        for path, content in files.items():
            target = self.path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            index[path.encode()] = index_entry_from_stat(os.stat(target), shas[path.encode()], FILE_MODE)
        index.write()  # `git status` stays clean

    def files(self, under: str = "projects") -> dict[str, bytes]:
        """Every file of the last commit under a directory: {path: content}."""
        head = self.head()
        found: dict[str, bytes] = {}
        if head is None:
            return found

        def walk(tree: Tree, prefix: str) -> None:
            for item in tree.items():
                path = f"{prefix}/{item.path.decode()}"
                if stat.S_ISDIR(item.mode):
                    walk(self.repo[item.sha], path)
                else:
                    found[path] = self.repo[item.sha].data

        root = self.repo[self.repo[head].tree]
        if under.encode() in root:
            walk(self.repo[root[under.encode()][1]], under)
        return found

    def commit_count(self) -> int:
        head = self.head()
        return 0 if head is None else sum(1 for _ in self.repo.get_walker(include=[head]))


def attachment_content(sha256: str) -> bytes:
    """An attachment's content, from the attachment storage (chalicelib/attachments/storage.py)."""
    from ..attachments.storage import storage
    from ..config import get_settings

    return storage(get_settings()).read(sha256)


def with_changes(repo: Repo, tree: Tree, changes: dict[bytes, bytes], new_objects: list) -> Tree:
    """A copy of `tree` with files set (path -> blob id); every new tree goes to new_objects."""
    tree = Tree.from_string(tree.as_raw_string()) if tree.id in repo.object_store else Tree()
    nested: dict[bytes, dict[bytes, bytes]] = defaultdict(dict)
    for path, sha in changes.items():
        head, sep, rest = path.partition(b"/")
        if sep:
            nested[head][rest] = sha
        else:
            tree[head] = (FILE_MODE, sha)
    for name, subchanges in nested.items():
        subtree = repo[tree[name][1]] if name in tree else Tree()
        tree[name] = (stat.S_IFDIR, with_changes(repo, subtree, subchanges, new_objects).id)
    new_objects.append(tree)
    return tree
