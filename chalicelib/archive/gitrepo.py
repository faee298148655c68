"""Applying entries to a git repository, with dulwich (pure Python: Lambda has no git
binary, and no native library to ship). docs/archive.md says why not pygit2.

Idempotent by construction: a file's content depends only on its entry, so applying an
entry again leaves the tree unchanged, and an unchanged tree makes no commit. Each
project's entries of a batch become one commit, and all of a commit's new objects are
written as one pack (a loose object per file is what makes naive git writers slow).

A commit reads and rewrites only the trees on the paths it changes (the layout keeps them
small: render.py), never a whole folder of the archive. Every commit adds a pack, and
dulwich searches packs one by one and keeps each open: `maintain` merges the small ones
(geometric repacking, as `git repack --geometric=2`), streaming, with bounded memory.
"""

import hashlib
import itertools
import json
import os
import re
from binascii import hexlify
import stat
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from pathlib import Path

from dulwich.errors import NoIndexPresent, NotGitRepository
from dulwich.index import commit_tree, index_entry_from_stat
from dulwich.objects import Blob, Commit, Tree
from dulwich.pack import DELTA_TYPES, full_unpacked_object, write_pack_data, write_pack_index
from dulwich.repo import Repo

from ..human_keys import normalize_human_key
from .render import (
    attachment_paths, commit_message, is_mark, json_of, keeping_what_is_known, project_json_path, render, version_of,
)

BRANCH = b"refs/heads/main"
IDENTITY = b"Agent Mail <agent-mail@localhost>"
FILE_MODE = 0o100644
LAYOUT_FILE = b"layout.json"  # at the root: which layout the archive uses (migrate.py)
LAYOUT_BLOB = Blob.from_string(b'{\n  "layout": 2,\n  "messages": "projects/{slug}/messages/YYYY/MM/DD/HH/mm/SS/{file}"\n}\n')
MAINTAIN_EVERY = 32  # commits between two `maintain` runs of the workers
MERGE_LIMIT = 32 * 1024 * 1024  # a merged pack is at most this large (bounded memory and time)
MAINTAIN_MERGES = 4  # merges one due maintenance may make: it keeps up with 4 x MERGE_LIMIT of new packs
TREE_CACHE = 4 * 1024 * 1024  # bytes of tree data the writer keeps (parsed, a tree takes ~10x its size in memory)
CHECKED_ATTACHMENTS = 4096  # (blob, sha256) pairs verify and rebuild remember having read
READER_TREE_CACHE = 256 * 1024  # a reader going through the archive in order needs the trees of its recent paths only
FOLDER_IDS = 2048  # folder path -> tree id pairs of one commit lookups remember (~300 bytes each)


class ForeignProject(ValueError):
    """An entry for a project whose slug names another project's folder in the archive."""


class NoArchive(FileNotFoundError):
    """A reader found no repository where the archive should be."""


class NotAnArchive(ValueError):
    """The directory holds something else than an Agent Mail archive (a code repository, someone's
    files): writing there would commit mail onto their branch and check files out among theirs."""


ARCHIVE_NAMES = {b"projects", b"products", LAYOUT_FILE}  # all an archive's root holds, in every layout (render.py)
# And what a repository made on a forge for it may start with (a remote "initialized with a README"):
# notes beside the archive, never written by it, unlike a code repository's folders.
REPOSITORY_NOTES = re.compile(r"(?i)(readme|licen[cs]e|copying|notice)(\.[a-z0-9]+)?|\.git(ignore|attributes)")


class GitArchive:
    """A repository at `path` (created if missing or empty, unless `create` is false: readers never
    leave an empty repository behind; anything but an archive is refused: refuse_unless_archive).
    With a working tree, files are also written to disk (and the index kept in step) so that
    people can read them; a bare repository (the Lambda worker's clone) has only the git objects."""

    def __init__(self, path: Path, bare: bool = False, create: bool = True, tree_cache: int = TREE_CACHE) -> None:
        self.path = Path(path)
        if (self.path / ".git").exists() or (self.path / "HEAD").exists():
            self.repo = open_archive(self.path)
        elif self.path.is_dir() and any(entry.name != "lost+found" for entry in self.path.iterdir()):
            # never `git init` among someone's files (a new volume's lost+found is no one's)
            raise not_an_archive(self.path, "a directory of other files, not a git repository")
        elif not create:
            raise NoArchive(f"no archive at {self.path} (ARCHIVE_DIR)")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.repo = Repo.init_bare(str(self.path)) if bare else Repo.init(str(self.path))
            self.repo.refs.set_symbolic_ref(b"HEAD", BRANCH)
        self.bare = self.repo.bare
        self.trees = TreeCache(tree_cache)
        self.checked: set[tuple[bytes, str]] = set()  # attachment files found to hold their name's content
        self.folder_ids: dict[str, bytes | None] = {}  # of folder_root's folders (lookup)
        # Every pack stays mapped (dulwich's default: no packed_git_limit). A limit below the packs'
        # total unmapped the least recently used ones, and lookups opened their indexes again
        # and again: a one-message commit's time grew with the archive (bench/README.md).
        last_used_first(self.repo.object_store)
        refuse_unless_archive(self.repo, self.path)  # (after last_used_first: it reads the newest packs first)

    def git_locks(self) -> list[Path]:
        """The lock files (`refs/heads/main.lock`, `index.lock`, ...) in the repository: a writer
        holds them for a moment; one killed mid-commit leaves them behind."""
        control = Path(self.repo.controldir())
        return [*control.glob("refs/**/*.lock"), *control.glob("*.lock")]

    def clear_stale_locks(self) -> list[Path]:
        """Remove the lock files a writer killed mid-commit left behind: git refuses to move a ref
        while its lock exists. Only for the archive's one writer (holding ARCHIVE_DIR.lock:
        worker.writing), since nobody else can hold them."""
        stale = self.git_locks()
        for lock in stale:
            lock.unlink(missing_ok=True)
        return stale

    @classmethod
    def local(cls, settings, create: bool = True) -> "GitArchive":
        """The local-mode archive: ARCHIVE_DIR, bare unless ARCHIVE_WORKTREE."""
        return cls(settings.archive_dir, bare=not settings.archive_worktree, create=create)

    @classmethod
    def to_read(cls, settings) -> "GitArchive":
        """ARCHIVE_DIR's repository for a command that only reads it (verify, restore, doctor's
        checks): never created (NoArchive), and with a small tree cache (the writer's held 35-80 MB
        of parsed trees in a verify, which reading the archive in order does not use)."""
        return cls(settings.archive_dir, create=False, tree_cache=READER_TREE_CACHE)

    @classmethod
    def refusal(cls, settings) -> str | None:
        """Why ARCHIVE_DIR cannot be the archive (None: it is one, or has none yet): what the
        server says at start, before its worker would die on it."""
        try:
            cls(settings.archive_dir, create=False, tree_cache=READER_TREE_CACHE).close()
        except NoArchive:
            return None
        except NotAnArchive as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self.repo.close()

    def __enter__(self) -> "GitArchive":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def head(self) -> bytes | None:
        """The branch's commit id (hex), or None before the first commit."""
        return self.repo.refs.as_dict().get(BRANCH)

    def apply(self, entries: list[dict], keep_newer: bool = True) -> dict[str, str | None]:
        """Write the entries; {project: new commit id, or None if nothing changed}. keep_newer:
        a file an entry rewrites stays as it is if it has a newer version (keep_newer_files);
        `archive rebuild` writes the database's state whatever the archive says (False)."""
        by_project: dict[str, list[dict]] = defaultdict(list)
        for entry in entries:
            by_project[entry["project"]].append(entry)
        return {project: self.commit(group, keep_newer) for project, group in by_project.items()}

    def commit(self, entries: list[dict], keep_newer: bool = True) -> str | None:
        files: dict[str, bytes] = {}
        parent = self.head()
        for entry in entries:
            rendered = render(entry)
            if keep_newer:
                self.keep_newer_files(rendered, files, parent)
            files.update(rendered)
            for path, sha256 in attachment_paths(entry).items():  # one file per content and project
                if path not in files and not self.holds_attachment(path, sha256, parent, read=not keep_newer):
                    files[path] = attachment_content(sha256)
        self.check_owner(entries, parent)
        if parent is None:  # a new archive starts in the current layout
            files[LAYOUT_FILE.decode()] = LAYOUT_BLOB.data
        blobs: dict[bytes, Blob] = {}  # an inbox copy is often the outbox copy: one blob
        changes = {}
        for path, content in files.items():
            if content not in blobs:
                blobs[content] = Blob.from_string(content)
            changes[path.encode()] = (FILE_MODE, blobs[content].id)
        root = self.tree(self.repo[parent].tree) if parent else Tree()
        new_objects: list = []
        tree = with_changes(self.tree, root, changes, new_objects)
        if parent and tree.id == self.repo[parent].tree:
            return None  # everything was already there
        commit = self.write_commit(tree.id, parent, commit_message(entries), [*blobs.values(), *new_objects])
        if not self.bare:
            self.write_worktree(files, {path.encode(): blobs[content].id for path, content in files.items()})
        self.commits += 1
        return commit.id.decode()

    def remove(self, paths: list[str], message: str) -> str | None:
        """Commit the head without these files (and the folders they leave empty); the new commit's
        id, or None if it holds none of them."""
        parent = self.head()
        changes = {path.encode(): None for path in paths if self.file_id(path, parent)}
        if not changes:
            return None
        new_objects: list = []
        tree = with_changes(self.tree, self.tree(self.root(parent)), changes, new_objects)
        commit = self.write_commit(tree.id, parent, message, new_objects)
        if not self.bare:
            self.remove_from_worktree(list(changes))
        self.commits += 1
        return commit.id.decode()

    def write_commit(self, tree: bytes, parent: bytes | None, message: str, objects: list) -> Commit:
        """Write the objects and a commit of `tree` as one pack, and move the branch to it."""
        commit = Commit()
        commit.tree, commit.parents = tree, [parent] if parent else []
        commit.author = commit.committer = IDENTITY
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message.encode()
        add_pack(self.repo.object_store, [*objects, commit])
        self.trees.add(obj for obj in objects if isinstance(obj, Tree))  # the next commit starts from these
        if not self.repo.refs.set_if_equals(BRANCH, parent, commit.id):
            raise RuntimeError("the archive branch moved during a commit: is another writer running?")
        return commit

    def replay(self, base: bytes, ours: bytes, onto: bytes) -> bytes | None:
        """The commits from `base` to `ours` made again on `onto` (another writer's commit since
        `base`), the branch moved there; the new head. Each copies the folders it changed (a
        project's, products/, a root file) as they are: nothing is rendered or downloaded again,
        so a slow batch's retry takes as long as a quick one's. None, and nothing changed, if
        `onto` changed one of those folders since `base`: its entries must be applied again there
        (their files, their owner, the newer version of a file may depend on what it wrote)."""
        if (chain := self.commits_since(base, ours)) is None:
            return None
        changes = [self.changed_folders(self.repo[current.parents[0]].tree, current.tree) for current in reversed(chain)]
        if any(self.lookup(path.decode(), base) != self.lookup(path.decode(), onto) for change in changes for path in change):
            return None
        self.repo.refs[BRANCH] = onto
        head = onto
        for current, change in zip(reversed(chain), changes):
            new_objects: list = []
            tree = with_changes(self.tree, self.tree(self.root(head)), change, new_objects)
            head = self.write_commit(tree.id, head, current.message.decode(), new_objects).id
            self.commits += 1
        return head

    def commits_since(self, base: bytes, head: bytes) -> list[Commit] | None:
        """The commits from `head` back to `base` (excluded), newest first, by first parents; None if
        `head` does not descend from `base` within what the repository holds (a shallow clone's
        history ends at its shallow commits: their parents are not there)."""
        chain, commit, shallow = [], head, self.repo.get_shallow()
        while commit != base:
            current = self.repo[commit]
            if len(current.parents) != 1 or commit in shallow:
                return None
            chain.append(current)
            commit = current.parents[0]
        return chain

    def pack_data(self, have: set[bytes], want: set[bytes], **options) -> tuple[int, Iterator]:
        """What a push of `want` sends to a remote that has `have` (dulwich's generate_pack_data):
        for a branch that moved on from a commit the remote has, each new commit and what its tree
        holds that its parent's does not at the same path, reading only the trees that differ.
        dulwich's own reads every tree of the remote's commit (and its whole history) to find what
        the remote has: a push's time grew with the archive. Otherwise (a new remote) dulwich's."""
        chains = [self.commits_since(base, head) for head in want for base in have if base in self.repo] if len(want) == 1 else []
        if not (chains := [chain for chain in chains if chain is not None]):
            return self.repo.generate_pack_data(have, want, **options)
        found: dict[bytes, None] = {}
        for commit in chains[0]:
            found[commit.id] = None
            self.new_in_tree(self.repo[commit.parents[0]].tree, commit.tree, found)
        return len(found), (full_unpacked_object(self.repo[sha]) for sha in found)

    def new_in_tree(self, old: bytes | None, new: bytes, found: dict[bytes, None]) -> None:
        """Add to `found` the ids of tree `new` and of every object under it that tree `old` does
        not hold at the same path; folders that are the same in both are not read."""
        if old == new or new in found:
            return
        found[new] = None
        was = self.tree(old) if old else Tree()
        for name, mode, sha in self.tree(new).iteritems():
            before = was[name] if name in was else None
            if before == (mode, sha):
                continue
            if stat.S_ISDIR(mode):
                self.new_in_tree(before[1] if before and stat.S_ISDIR(before[0]) else None, sha, found)
            else:
                found[sha] = None

    def changed_folders(self, old: bytes, new: bytes) -> dict[bytes, tuple[int, bytes] | None]:
        """{path: its (mode, id) in tree `new`, or None if gone} of each entry of the root, or of
        projects/ (a project's folder), that differs in tree `old`."""
        changes = self.changed_entries(old, new)
        was, now = self.tree(old), self.tree(new)
        if b"projects" in was and b"projects" in now and all(stat.S_ISDIR(tree[b"projects"][0]) for tree in (was, now)):
            changes.pop(b"projects", None)  # its changed folders instead
            inside = self.changed_entries(was[b"projects"][1], now[b"projects"][1])
            changes |= {b"projects/" + name: entry for name, entry in inside.items()}
        return changes

    def changed_entries(self, old: bytes, new: bytes) -> dict[bytes, tuple[int, bytes] | None]:
        """{name: its (mode, id) in tree `new`, or None} of each entry that differs in tree `old`."""
        was, now = self.tree(old), self.tree(new)
        entries = {name: (now[name] if name in now else None) for name in {*was, *now}}
        return {name: entry for name, entry in entries.items() if entry != (was[name] if name in was else None)}

    def tree(self, sha: bytes) -> Tree:
        """A tree, from the cache of recent ones when it is there (read-only: with_changes copies)."""
        return self.trees.get(sha) or self.trees.add([self.repo[sha]])

    commits = 0  # made by this instance: the workers `maintain` every MAINTAIN_EVERY

    def keep_newer_files(self, rendered: dict[str, bytes], files: dict[str, bytes], parent: bytes | None) -> None:
        """Drop the files of an entry that describe an older version of their project, agent or
        reservation than the one already written (earlier in the batch, or in the archive):
        entries may come out of order (one retried after a later one went through), and an agent
        retired then unretired must not end up retired. The JSON files are the ones entries
        rewrite; a message's (.md) are written once, and never change. A project.json kept keeps
        what is already written that its entry does not know: created_ts, and the project's
        archived state if the entry says none, as a message's (keeping_what_is_known)."""
        for path in [path for path in rendered if path.endswith(".json") and not is_mark(path)]:  # marks: written once
            written = json_of(files.get(path) or self.read(path, parent))
            if written is None:  # none yet, or edited into no JSON: the entry's file replaces it
                continue
            new = json.loads(rendered[path])
            if version_of(new) < version_of(written):
                del rendered[path]
            elif path.endswith("/project.json"):
                rendered[path] = keeping_what_is_known(rendered[path], new, written)

    def check_owner(self, entries: list[dict], parent: bytes | None) -> None:
        """Refuse to mix two projects in one folder: projects/{slug}/project.json names the
        human key the folder belongs to, and an entry of another project (a slug collision)
        fails with ForeignProject instead of overwriting its files. Entries queued before
        project.json existed carry no human key and are not checked."""
        keys = {entry["project_human_key"] for entry in entries if entry.get("project_human_key")}
        if not keys:
            return
        slug = entries[0]["project"]
        # A project.json edited into no JSON (or naming no key) names no owner: its project's entries replace it.
        owner = (json_of(self.read(project_json_path(slug), parent)) or {}).get("human_key")
        # Compared as normalised: a folder written under C:/x is C:\x's after migrations/0031 respelled it.
        owners = {normalize_human_key(key) for key in keys | ({owner} if isinstance(owner, str) else set())}
        if len(owners) > 1:
            raise ForeignProject(
                f"archive folder projects/{slug}/ holds more than one project ({', '.join(sorted(owners))}):"
                " give each project its own slug"
            )

    def read(self, path: str, commit: bytes | None = None) -> bytes | None:
        """One file of a commit (the head by default), or None; reads only the trees on its path."""
        sha = self.file_id(path, commit)
        blob = None if sha is None else self.repo[sha]
        return blob.data if isinstance(blob, Blob) else None

    def holds_attachment(self, path: str, sha256: str, commit: bytes | None = None, read: bool = True) -> bool:
        """Whether the commit holds the attachment file at `path` with the content its name (a
        sha256) says; read=False trusts the name (the workers: they wrote it so, and reading
        every attachment again would cost its size; verify and rebuild read it)."""
        blob = self.file_id(path, commit)
        return blob is not None and (not read or self._hashes_to(blob, sha256))

    def _hashes_to(self, blob: bytes, sha256: str) -> bool:
        if (blob, sha256) in self.checked:  # a file may serve many messages: read and hashed once
            return True
        if hashlib.sha256(self.repo[blob].data).hexdigest() != sha256:
            return False
        if len(self.checked) >= CHECKED_ATTACHMENTS:  # bounded: forgetting costs a read again, no more
            self.checked.clear()
        self.checked.add((blob, sha256))
        return True

    def file_id(self, path: str, commit: bytes | None = None) -> bytes | None:
        """The blob id of one file of a commit (the head by default), or None (no such file)."""
        found = self.lookup(path, commit)
        return None if found is None or stat.S_ISDIR(found[0]) else found[1]

    def first_held(self, paths: list[str]) -> dict[str, int]:
        """{path: commit time (Unix) of the oldest commit that holds it}, for paths the head holds:
        back from the head by first parents until none is there. It may read the whole history
        (three trees a commit): for a restore's rare questions only. A shallow clone's history ends
        at its shallow commits."""
        times: dict[str, int] = {}
        left, commit, shallow = set(paths), self.head(), self.repo.get_shallow()
        while left and commit is not None:
            current = self.repo[commit]
            for path in list(left):
                if self.lookup(path, commit) is None:
                    left.discard(path)  # written by the commit after this one
                else:
                    times[path] = current.commit_time
            commit = current.parents[0] if current.parents and commit not in shallow else None
        return times

    def lookup(self, path: str, commit: bytes | None = None) -> tuple[int, bytes] | None:
        """(mode, object id) of a path in a commit (the head by default), or None if it has none;
        reads only the trees on the path, never a file."""
        commit = commit or self.head()
        if commit is None:
            return None
        root = self.root(commit)
        if root != self.folder_root:  # another commit: its folders are other trees
            self.folder_root, self.folder_ids = root, {}
        folder, _, name = path.rpartition("/")
        sha = self.folder_id(folder) if folder else root
        tree = None if sha is None else self.tree(sha)
        return None if tree is None or name.encode() not in tree else tree[name.encode()]

    folder_root: bytes | None = None

    def folder_id(self, folder: str) -> bytes | None:
        """The tree id of a folder of the tree `folder_root`, or None (it has no such folder). The last
        FOLDER_IDS found are kept: the copies of a message, and messages of one second or minute,
        are looked up in sibling folders (a lookup reads one or two trees, not one per level)."""
        if folder in self.folder_ids:
            return self.folder_ids[folder]
        parent, _, name = folder.rpartition("/")
        found = self.folder_id(parent) if parent else self.folder_root
        if found is not None:
            tree, part = self.tree(found), name.encode()
            found = tree[part][1] if part in tree and stat.S_ISDIR(tree[part][0]) else None
        if len(self.folder_ids) >= FOLDER_IDS:
            self.folder_ids.pop(next(iter(self.folder_ids), None), None)  # the oldest: safe to lose, trees never change
        self.folder_ids[folder] = found
        return found

    _last_root = (None, None)

    def root(self, commit: bytes) -> bytes:
        """A commit's tree id; the last one asked for is kept (lookups in a row ask the same commit)."""
        if self._last_root[0] != commit:
            self._last_root = (commit, self.repo[commit].tree)
        return self._last_root[1]

    def sync_worktree(self) -> bool:
        """Bring the checked-out archive files and the index back in step with the head where the
        index does not describe the head's tree: a writer killed between moving the branch and
        writing the files (write_worktree) left them out, and applying its entries again changes no
        tree, so nothing else would write them. It reads the index (as each commit of a working tree
        does), not the head's trees; only a difference costs a walk of the head. Only the archive's
        own paths (ARCHIVE_NAMES) are compared and written: a file anyone else put in the working
        tree (a README beside the archive, a person's notes), staged or not, is left as it is (no
        reset of the whole tree); a file the head lacks is removed only if the head's parent had it
        (the killed writer's removal). True if it wrote."""
        head = None if self.bare else self.head()
        if head is None:
            return False
        try:
            index = self.repo.open_index()
        except (NoIndexPresent, FileNotFoundError):
            return False
        indexed = {path: (sha, mode) for path, sha, mode in index.iterobjects() if is_archive_path(path)}
        archived = [item for item in self.repo[self.root(head)].items() if item.path in ARCHIVE_NAMES]
        if commit_tree(Discarded(), [(path, sha, mode) for path, (sha, mode) in indexed.items()]) == tree_of(archived).id:
            return False
        wrote = False
        for item in archived:
            for entry in self.repo.object_store.iter_tree_contents(item.sha) if item.mode == stat.S_IFDIR else [item]:
                path = entry.path if entry is item else item.path + b"/" + entry.path
                if indexed.pop(path, (None,))[0] != entry.sha:
                    self.put_file(index, path, self.repo[entry.sha].data, entry.sha)
                    wrote = True
        parents = self.repo[head].parents
        for path in indexed:  # in the index, not in the head: a removal the killed writer did not finish?
            if any(self.lookup(path.decode(), parent) for parent in parents):
                self.drop_file(index, path)
                wrote = True
        if wrote:
            index.write()
        return wrote

    def put_file(self, index, path: bytes, content: bytes, sha: bytes) -> None:
        """Write one file to the working tree, and its index entry (index.write() is the caller's)."""
        target = self.path / path.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        index[path] = index_entry_from_stat(os.stat(target), sha, FILE_MODE)

    def drop_file(self, index, path: bytes) -> None:
        """Remove one file from the working tree, and its index entry if it has one (index.write() is the caller's)."""
        (self.path / path.decode()).unlink(missing_ok=True)
        if path in index:
            del index[path]

    def write_worktree(self, files: dict[str, bytes], shas: dict[bytes, bytes]) -> None:
        index = self.repo.open_index()
        for path, content in files.items():
            self.put_file(index, path.encode(), content, shas[path.encode()])
        index.write()  # `git status` stays clean

    def remove_from_worktree(self, paths: list[bytes]) -> None:
        index = self.repo.open_index()
        for path in paths:
            self.drop_file(index, path)
        index.write()

    def files(self, under: str = "projects") -> dict[str, bytes]:
        """Every file of the last commit under a directory: {path: content} (small archives)."""
        return {path: self.repo[sha].data for path, sha in self.walk(under)}

    def walk(self, under: str = "projects") -> Iterator[tuple[str, bytes]]:
        """(path, blob id) of every file of the last commit under a directory, in path order,
        one tree in memory per level: what reads a large archive."""
        head = self.head()
        if head is None:
            return
        sha = self.repo[head].tree
        for part in under.encode().split(b"/"):
            tree = self.repo[sha]
            if part not in tree:
                return
            mode, sha = tree[part]
            if not stat.S_ISDIR(mode):
                return
        yield from self._walk(sha, under)

    def _walk(self, sha: bytes, prefix: str) -> Iterator[tuple[str, bytes]]:
        for item in self.repo[sha].items():
            path = f"{prefix}/{item.path.decode()}"
            if stat.S_ISDIR(item.mode):
                yield from self._walk(item.sha, path)
            else:
                yield path, item.sha

    def folders(self, under: str) -> list[str]:
        """The names of the folders directly under a directory of the last commit."""
        head = self.head()
        if head is None:
            return []
        sha = self.repo[head].tree
        for part in under.encode().split(b"/"):
            tree = self.repo[sha]
            if part not in tree:
                return []
            sha = tree[part][1]
        return [item.path.decode() for item in self.repo[sha].items() if stat.S_ISDIR(item.mode)]

    def maintain(self, merge_limit: int = MERGE_LIMIT) -> int:
        """Merge small packs into one, so that the packs' sizes form a geometric series (each
        at least twice all smaller ones together): a few packs at any size, lookups that
        stay fast, and each object rewritten O(log n) times. Packs over merge_limit are left
        alone, and so is any merge that would make a pack larger than that. Objects are streamed from the old packs into the new one; the old ones are
        deleted once it is complete (a reader sees every object throughout). Returns how many
        packs were merged (0: nothing to do)."""
        store = self.repo.object_store
        store.pack_loose_objects()  # from `git` commands or older writers, if any
        packs = sorted(store.packs, key=pack_size)
        merge, total = [], 0
        for index, pack in enumerate(packs[:-1]):
            total += pack_size(pack)
            if total + pack_size(packs[index + 1]) > merge_limit:
                break
            if pack_size(packs[index + 1]) < 2 * total:
                merge = packs[: index + 2]
        if len(merge) < 2:
            return 0
        unwritten = set()  # an object in two packs is written once
        for pack in merge:
            unwritten.update(pack.index)
        count = len(unwritten)

        def objects() -> Iterator:
            for pack in merge:
                for unpacked in pack.iter_unpacked():
                    sha = hexlify(unpacked.sha())
                    if sha not in unwritten:
                        continue
                    unwritten.discard(sha)
                    if unpacked.pack_type_num in DELTA_TYPES:  # (fetched packs) a delta needs its base here
                        yield full_unpacked_object(store[sha])
                    else:
                        yield unpacked  # its bytes as they are: no parsing

        merged = add_pack(store, objects(), count)
        for pack in merge:
            if pack._basename != merged:
                store._remove_pack(pack)  # dulwich's own repack does the same
        store._update_pack_cache()
        self.maintained_at = self.commits
        return len(merge)

    maintained_at = 0

    def maintain_if_due(self) -> int:
        """`maintain` every MAINTAIN_EVERY commits (the workers call this after each batch), and
        again while it merges, up to MAINTAIN_MERGES times: so the packs do not pile up when the
        commits between two runs write more than one merge takes (batches of 2,000 messages left
        123 packs at 1M), and a merge's cost is spread thin. How many packs were merged."""
        if self.commits - self.maintained_at < MAINTAIN_EVERY:
            return 0
        self.maintained_at = self.commits
        return self.repack(MAINTAIN_MERGES)

    def repack(self, merges: int | None = None) -> int:
        """`maintain` again while it merges (at most `merges` times; by default until the packs
        form a geometric series, as after a command that wrote many commits: rebuild, migrate).
        How many packs were merged."""
        merged = 0
        for _ in range(merges) if merges else itertools.count():
            if not (count := self.maintain(MERGE_LIMIT)):
                break
            merged += count
        return merged

    def pack_count(self) -> int:
        return len(self.repo.object_store.packs)

    def commit_count(self) -> int:
        """The commits of the branch (of a shallow clone: those it holds)."""
        head = self.head()
        return 0 if head is None else sum(1 for _ in self.repo.get_walker(include=[head]))


def open_archive(path: Path) -> Repo:
    """The repository at `path` (NotAnArchive if there is none: a directory of other files)."""
    try:
        return Repo(str(path))
    except NotGitRepository:
        raise not_an_archive(path, "a directory of other files, not a git repository") from None


def refuse_unless_archive(repo: Repo, path: Path) -> None:
    """Close `repo` and raise NotAnArchive unless it is an Agent Mail archive: every branch's root
    holds only ARCHIVE_NAMES (what archives of every version wrote; no marker needed) and
    REPOSITORY_NOTES, and a repository without a branch is a new one. A code repository
    (ARCHIVE_DIR=.) is not."""
    branches = repo.refs.as_dict(b"refs/heads")
    for branch, sha in branches.items():
        try:
            names = {item.path.decode(errors="replace") for item in repo[repo[sha].tree].items()}
        except (KeyError, AttributeError):  # a branch to no commit: not what the archive's writer leaves
            names = {"no commit"}
        archived = {name.decode() for name in ARCHIVE_NAMES}
        if foreign := sorted(name for name in names if name not in archived and not REPOSITORY_NOTES.fullmatch(name)):
            repo.close()
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise not_an_archive(path, f"a git repository whose branch {branch.decode(errors='replace')} holds {shown}")
    if branches and b"main" not in branches:
        repo.close()
        raise not_an_archive(path, "a git repository without the archive's branch main")


def not_an_archive(path: Path, what: str) -> NotAnArchive:
    return NotAnArchive(f"ARCHIVE_DIR {path} is not an Agent Mail archive ({what}): set ARCHIVE_DIR to the archive's"
                        " directory, or to a new or empty one for a new archive; nothing was written there")


def tree_of(items) -> Tree:
    """A tree of these entries (path, mode, sha), made in memory, not stored."""
    tree = Tree()
    for item in items:
        tree.add(item.path, item.mode, item.sha)
    return tree


def is_archive_path(path: bytes) -> bool:
    """Whether a path of a working tree is one the archive writes (under ARCHIVE_NAMES)."""
    return path.split(b"/", 1)[0] in ARCHIVE_NAMES


class Discarded:
    """An object store that keeps nothing: what commit_tree computes only ids for."""

    def add_object(self, obj) -> None:
        pass


def attachment_content(sha256: str) -> bytes:
    """An attachment's content, from the attachment storage (chalicelib/attachments/storage.py)."""
    from ..attachments.storage import storage
    from ..config import get_settings

    return storage(get_settings()).read(sha256)


def add_pack(store, objects, count: int | None = None) -> str:
    """Write objects (a list, or an iterator of UnpackedObjects and their count) as a new pack,
    named after its checksum as git does; its path without extension. Not dulwich's
    add_objects: that reads the pack back and compares the new pack's name with every
    existing pack's, which costs a pass over all their object ids on every commit."""
    if count is None:
        unique = list({obj.id: obj for obj in objects}.values())  # equal trees at two paths are one object
        objects, count = (full_unpacked_object(obj) for obj in unique), len(unique)
    temporary = os.path.join(store.pack_dir, f"tmp_pack_{os.getpid()}_{time.monotonic_ns()}")
    try:
        with open(temporary + ".pack", "wb") as pack:
            entries, checksum = write_pack_data(pack.write, objects, object_format=store.object_format, num_records=count)
            pack.flush()
            os.fsync(pack.fileno())
        with open(temporary + ".idx", "wb") as index:
            write_pack_index(index, sorted((sha, offset, crc) for sha, (offset, crc) in entries.items()), checksum)
        final = os.path.join(store.pack_dir, f"pack-{checksum.hex()}")
        os.replace(temporary + ".pack", final + ".pack")
        os.replace(temporary + ".idx", final + ".idx")  # the index last: git looks for packs by it
    finally:
        for leftover in (temporary + ".pack", temporary + ".idx"):
            if os.path.exists(leftover):
                os.remove(leftover)
    store._update_pack_cache()  # which tells dulwich the new pack is used: it is tried first
    return final


def last_used_first(store) -> None:
    """Have dulwich try first the pack it last found an object in (or, at the start, the newest),
    not the packs in the order it found them, reading every other pack's index before: a commit
    reads the trees the last commits wrote, and a walk of the archive (verify, restore) trees
    that were written, and merged, together. (dulwich tells `_mark_pack_used` each pack a lookup
    or a new pack used.)"""
    mark = store._mark_pack_used

    def used(name: str) -> None:
        mark(name)
        packs = store._pack_cache
        if name in packs and next(iter(packs)) != name:
            store._pack_cache = {name: packs[name], **packs}

    store._update_pack_cache()
    packs = store._pack_cache
    newest = sorted(packs, key=lambda name: os.path.getmtime(packs[name]._data_path), reverse=True)
    store._pack_cache = {name: packs[name] for name in newest}
    store._mark_pack_used = used


def pack_size(pack) -> int:
    return os.path.getsize(pack._data_path)  # no public name for it in dulwich 1.2


class TreeCache:
    """The trees a commit reads and writes, kept for the next commits (which start from the
    same recent folders) up to `limit` bytes of tree data, least recently used out first.
    Git objects never change, so it is always safe to use, and safe to lose."""

    def __init__(self, limit: int = TREE_CACHE) -> None:
        self.limit, self.size = limit, 0
        self.items: OrderedDict[bytes, Tree] = OrderedDict()

    def get(self, sha: bytes) -> Tree | None:
        tree = self.items.get(sha)
        if tree is not None:
            self.items.move_to_end(sha)
        return tree

    def add(self, trees) -> Tree | None:
        """Remember trees; the last one."""
        tree = None
        for tree in trees:
            if tree.id not in self.items:
                self.items[tree.id] = tree
                self.size += len(tree.as_raw_string())
        while self.size > self.limit and self.items:
            _, old = self.items.popitem(last=False)
            self.size -= len(old.as_raw_string())
        return tree


def with_changes(read, tree: Tree, changes: dict[bytes, tuple[int, bytes] | None], new_objects: list) -> Tree:
    """A copy of `tree` with entries set (path -> (mode, id): a file, or a whole folder) or
    removed (path -> None; a folder left empty goes too: git keeps none); only the trees on the
    changed paths are read, and every new tree goes to new_objects."""
    tree = Tree.from_string(tree.as_raw_string())
    nested: dict[bytes, dict[bytes, tuple[int, bytes] | None]] = defaultdict(dict)
    for path, entry in changes.items():
        head, sep, rest = path.partition(b"/")
        if sep:
            nested[head][rest] = entry
        elif entry is not None:
            tree[head] = entry
        elif head in tree:
            del tree[head]
    for name, subchanges in nested.items():
        subtree = with_changes(read, read(tree[name][1]) if name in tree else Tree(), subchanges, new_objects)
        if len(subtree):
            tree[name] = (stat.S_IFDIR, subtree.id)
        else:
            new_objects.pop()  # itself, added last
            if name in tree:
                del tree[name]
    new_objects.append(tree)
    return tree
