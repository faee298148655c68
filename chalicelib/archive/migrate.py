"""Moving an archive of the first layout (flat YYYY/MM folders) to per-second folders.

Until layout 2 every message file sat in a month folder (messages/YYYY/MM/{file}, and the
same in each agent's inbox/ and outbox/), which every commit rewrote whole. Migrating moves
each such file to YYYY/MM/DD/HH/mm/SS/ (the folder its name's timestamp gives, which is
what render.py writes today) in one commit. Only trees change: the files' contents, and so
their blob ids, stay as they were (older documents keep their front matter, without
project_human_key). A month is converted at a time: memory holds one old month folder.

The workers run it on start (`work`, the SQS worker before applying onto the remote's
head), `archive migrate` runs it by hand; once the root has layout.json it costs one
lookup. Readers (`verify`, `restore`) understand both layouts anyway.
"""

import stat

from dulwich.objects import Tree

from .gitrepo import FILE_MODE, LAYOUT_BLOB, LAYOUT_FILE, GitArchive, with_changes
from .render import second_dir_of_name


def migrate_layout(archive: GitArchive) -> int:
    """Move every file of a flat month folder to its per-second folder, in one commit;
    the number of files moved (0: nothing to do, and no commit)."""
    head = archive.head()
    if head is None:
        return 0
    repo = archive.repo
    root = repo[repo[head].tree]
    if LAYOUT_FILE in root:
        return 0
    changes: dict[bytes, tuple[int, bytes]] = {LAYOUT_FILE: (FILE_MODE, LAYOUT_BLOB.id)}
    moved = 0
    for folder in mail_folders(archive):
        for year in archive.folders(folder):
            for month in archive.folders(f"{folder}/{year}"):
                path = f"{folder}/{year}/{month}"
                tree, count = regrouped(archive, path)
                if count:
                    changes[path.encode()] = (stat.S_IFDIR, tree)
                    moved += count
    new_objects: list = []
    tree = with_changes(archive.tree, root, changes, new_objects)
    archive.write_commit(tree.id, head, f"archive: layout 2, {moved} message files moved to per-second folders\n",
                         [LAYOUT_BLOB, *new_objects])
    archive.sync_worktree()  # the checked-out files follow the commit
    return moved


def mail_folders(archive: GitArchive):
    """Every folder that holds message files by date: messages/, and each agent's inbox/ and outbox/."""
    for slug in archive.folders("projects"):
        yield f"projects/{slug}/messages"
        for name in archive.folders(f"projects/{slug}/agents"):
            for box in ("inbox", "outbox"):
                yield f"projects/{slug}/agents/{name}/{box}"


def regrouped(archive: GitArchive, month_path: str) -> tuple[bytes, int]:
    """The month folder with its loose message files moved into per-second folders (the new
    trees are written at once); (tree id, files moved)."""
    repo = archive.repo
    month = repo[archive_tree_id(archive, month_path)]
    kept = Tree()
    changes: dict[bytes, tuple[int, bytes]] = {}
    for item in month.items():
        folder = second_dir_of_name(item.path.decode()) if not stat.S_ISDIR(item.mode) else None
        if folder:  # "2026/11/24/07/17/10": the month is already the tree's place
            changes[f"{folder.split('/', 2)[2]}/{item.path.decode()}".encode()] = (item.mode, item.sha)
        else:
            kept[item.path] = (item.mode, item.sha)
    if not changes:
        return month.id, 0
    new_objects: list = []
    tree = with_changes(archive.tree, kept, changes, new_objects)
    repo.object_store.add_objects([(obj, None) for obj in new_objects])
    return tree.id, len(changes)


def archive_tree_id(archive: GitArchive, path: str) -> bytes:
    repo = archive.repo
    sha = repo[archive.head()].tree
    for part in path.encode().split(b"/"):
        sha = repo[sha][part][1]
    return sha
