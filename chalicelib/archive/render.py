"""Entry -> files: the layout of the archive, as one pure function.

An entry is an outbox payload: {"kind": ..., "project": slug, ...}. The same function
serves the local worker, the SQS worker and `archive rebuild`, so they cannot disagree.
Paths are built only from a validated slug, validated agent names, an id, a timestamp and
a sanitised subject: nothing a client sends can climb out of projects/{slug}/.

A message's copies live in a folder per second of its creation (YYYY/MM/DD/HH/mm/SS):
every folder has at most 60 (or 31, 24, 12) subfolders and a leaf holds one second's
mail, so a commit rewrites a few small trees whatever the archive's size (the old flat
YYYY/MM folders were rewritten whole by every commit: docs/archive.md, "Layout").
"""

import json
import re
from collections.abc import Iterable, Iterator
from typing import get_args

import orjson

from ..config import RetentionMode
from ..names import CONTACT_POLICIES, DEFAULT_CONTACT_POLICY, NAME_PATTERN, OVERSEER_PROFILE, PRODUCT_KEY_PATTERN

SLUG_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:--[0-9a-f]{16})?")  # tools/projects.py free_slug
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
TIMESTAMP_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?\+00:00")
_TIME_SEPARATORS = re.compile(r"[:.]")  # (compiled once: a file's name is made for every copy of every message)
_NOT_IN_SLUG = re.compile(r"[^a-z0-9]+")


def render(entry: dict) -> dict[str, bytes]:
    """{repository path: file content} for one entry."""
    return RENDERERS[entry["kind"]](entry)


def commit_message(entries: list[dict]) -> str:
    """One line per entry; the first names the batch."""
    lines = [describe(entry) for entry in entries]
    head = lines[0] if len(lines) == 1 else f"archive: {len(lines)} entries ({lines[0]}, ...)"
    return head + ("\n\n" + "\n".join(lines) if len(lines) > 1 else "") + "\n"


def describe(entry: dict) -> str:
    if entry["kind"] == "message":
        to = ", ".join(entry["to"] + entry["cc"]) or "(bcc only)"
        return f"mail: {entry['sender']} -> {to} | {one_line(entry['subject'])}"
    if entry["kind"] == "agent":
        return f"agent: profile {entry['name']}"
    if entry["kind"] == "project":
        return f"project: {'archived' if entry.get('project_archived_ts') else 'active'}"
    if entry["kind"] == "mark":
        return f"mark: {entry['agent']} {'acknowledged' if entry.get('ack_ts') else 'read'} {entry['message_id']}"
    if entry["kind"] == "product":
        return f"product: {entry['product_key']} ({len(entry['projects'])} projects)"
    if entry["kind"] == "contact":
        return f"contact: {entry['requester']} -> {entry['target']} {entry['status']}"
    return f"file_reservation: {entry['agent']} {entry['path_pattern']}"


def message_files(entry: dict) -> dict[str, bytes]:
    documents: dict[tuple, bytes] = {}  # one per bcc list shown: an inbox copy is often the outbox copy
    files = {}
    for path, bcc in message_copies(entry).items():
        if (shown := tuple(bcc)) not in documents:
            documents[shown] = document({**entry, "bcc": bcc})
        files[path] = documents[shown]
    return {**files, **project_file(entry)}


def message_copies(entry: dict) -> dict[str, list[str]]:
    """{path: the bcc recipients its document lists} of each of a message's files: the canonical
    one and the sender's outbox copy list them all, the to and cc recipients' inbox copies none
    (what they see), a bcc recipient's own copy only that recipient."""
    folder, name = second_dir(entry["created_ts"]), message_name(entry)
    copies = {f"{project_dir(entry['project'])}/messages/{folder}/{name}": entry["bcc"],  # (message_path, its parts made once)
              f"{agent_dir(entry['project'], entry['sender'])}/outbox/{folder}/{name}": entry["bcc"]}
    for address in entry["to"] + entry["cc"]:
        copies[f"{agent_dir(*home(address, entry['project']))}/inbox/{folder}/{name}"] = []
    for address in entry["bcc"]:
        copies[f"{agent_dir(*home(address, entry['project']))}/inbox/{folder}/{name}"] = [address]
    return copies


BATCH_MAX_BYTES = 32 * 1024 * 1024  # what one commit renders at most (documents and attachments): bounded memory


def rendered_size(entry: dict, payload_bytes: int) -> int:
    """About how many bytes writing the entry holds in memory: a message's payload once per
    distinct document (the canonical one, the to and cc readers' one, one per bcc reader),
    plus its attachments."""
    if entry["kind"] != "message":
        return payload_bytes
    documents = 1 + bool(entry["to"] or entry["cc"]) + len(entry["bcc"])
    return payload_bytes * documents + sum(item["size"] for item in entry.get("attachments", ()))


def batches(entries: Iterable[dict], max_count: int, max_bytes: int) -> Iterator[list[dict]]:
    """The entries in order, lazily (none read ahead), in lists of at most max_count, each closed
    once it renders to max_bytes or more: what one commit holds in memory (max_bytes and one entry)."""
    batch, size = [], 0
    for entry in entries:
        batch.append(entry)
        size += rendered_size(entry, len(orjson.dumps(entry)))
        if len(batch) == max_count or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def attachment_paths(entry: dict) -> dict[str, str]:
    """{repository path: sha256} of a message's attachments: one file per content and project,
    however many messages carry it (the front matter names it by sha256)."""
    if entry["kind"] != "message":
        return {}
    return {attachment_path(entry["project"], item["sha256"]): item["sha256"] for item in entry.get("attachments", ())}


def attachment_path(slug: str, sha256: str) -> str:
    if not SHA256_PATTERN.fullmatch(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return f"{project_dir(slug)}/attachments/{sha256[:2]}/{sha256}"


def agent_files(entry: dict) -> dict[str, bytes]:
    profile = {key: entry[key] for key in ("id", "name", "program", "model", "task_description", "inception_ts", "project", "project_human_key")}
    for key in ("retired_ts", "contact_policy", "version"):  # only when set: a profile as it was written before they existed
        if entry.get(key):
            profile[key] = entry[key]
    if entry.get("agent_kind"):  # always, but from an entry queued before profiles said
        profile["kind"] = entry["agent_kind"]
    return {f"{agent_dir(entry['project'], entry['name'])}/profile.json": to_json(profile), **project_file(entry)}


AGENT_KINDS = ("agent", "human")


def agent_kind(profile: dict) -> str:
    """Whose profile this is: "agent", or "human" (a person: ensure_overseer, send_overseer_message).
    A profile written before profiles said (or saying something else: edited by hand) is a person's
    if it reads as a person's profile always did (names.OVERSEER_PROFILE, whatever its name: people
    choose theirs), else an agent's; an agent that registered with those very words comes back a
    person, which `archive verify` lists as different until a rebuild writes its kind."""
    if profile.get("kind") in AGENT_KINDS:
        return profile["kind"]
    return "human" if all(profile.get(key) == value for key, value in OVERSEER_PROFILE.items()) else "agent"


def contact_policy(profile: dict) -> str:
    """Who may write to the profile's agent: the policy it chose, or (a profile that names none, or
    none there is: edited by hand) its kind's default."""
    chosen = profile.get("contact_policy")
    return chosen if chosen in CONTACT_POLICIES else DEFAULT_CONTACT_POLICY[agent_kind(profile)]


def reservation_files(entry: dict) -> dict[str, bytes]:
    """One file per reservation, named by its id. (Archives written before named it by the
    sha1 of its pattern, so two agents' reservations of one pattern shared a file: readers
    still take those, reservation_id_of_name.)"""
    reservation = {key: value for key, value in entry.items() if key not in PROJECT_STATE}  # project.json's
    return {f"{project_dir(entry['project'])}/file_reservations/{int(entry['id'])}.json": to_json(reservation), **project_file(entry)}


def contact_files(entry: dict) -> dict[str, bytes]:
    """One file per pair of agents that asked for contact, named by its id, in the project of the
    pair's first agent (outbox.contact_payload); the other is Name@slug if it is another project's."""
    for address in (entry["requester"], entry["target"]):
        agent_dir(*home(address, entry["project"]))  # names and slugs as paths would take them
    contact = {key: value for key, value in entry.items() if key not in PROJECT_STATE}
    return {f"{project_dir(entry['project'])}/contacts/{int(entry['id'])}.json": to_json(contact), **project_file(entry)}


def product_files(entry: dict) -> dict[str, bytes]:
    """products/{product_key}.json: a product (of no one project), its projects by human key."""
    if not PRODUCT_KEY_PATTERN.fullmatch(entry["product_key"]) or entry["product_key"] != entry["product_key"].lower():  # as stored
        raise ValueError(f"not a product key: {entry['product_key']!r}")
    product = {key: value for key, value in entry.items() if key not in ("kind", "project")}
    return {f"products/{entry['product_key']}.json": to_json(product)}


def mark_files(entry: dict) -> dict[str, bytes]:
    """A recipient's marks of a message (outbox.mark_payload) in its folder beside its inbox copy:
    marks/ then the same folder per second of the message's creation (a commit of marks, too,
    rewrites a few small trees whatever the archive's size), `{id}-read.json` once it read it and
    `{id}-ack.json` once it acknowledged it. A mark never changes once made, so each file is
    written once, as a message's are: no entry can undo another (the writer reads none back)."""
    name = f"{agent_dir(entry['project'], entry['agent'])}/marks/{second_dir(entry['message_created_ts'])}/{int(entry['message_id'])}"
    read = {"message_id": entry["message_id"], "read_ts": entry["read_ts"]}
    files = {f"{name}-read.json": to_json(read)}
    if entry.get("ack_ts"):
        files[f"{name}-ack.json"] = to_json({**read, "ack_ts": entry["ack_ts"]})
    return files


def is_mark(path: str) -> bool:
    return "/marks/" in path and path.endswith(("-read.json", "-ack.json"))


def reservation_id_of_name(name: str) -> int | None:
    """A reservation file's id, from its name: `{id}.json`; None for a name of the first
    naming (`{sha1(pattern)}.json`: its content says which reservation it holds)."""
    stem = name.removesuffix(".json")
    return int(stem) if stem.isdigit() and len(stem) != 40 else None


# What entries carry for project.json alone.
PROJECT_STATE = ("project_created_ts", "project_archived_ts", "project_unarchived_ts", "project_retention_mode",
                 "project_retention_days", "project_version")


def project_file(entry: dict) -> dict[str, bytes]:
    """projects/{slug}/project.json: whose folder this is, when the project was made (archives
    written before say not), and, while the project is archived,
    since when, or, once it was unarchived, since when it is active again; its own retention
    policy, if it has one; the version of the project's last change. Entries queued before it
    existed carry no human key and write none."""
    if not entry.get("project_human_key"):
        return {}
    project = {"slug": entry["project"], "human_key": entry["project_human_key"]}
    for key in PROJECT_STATE:
        if entry.get(key):
            project[key.removeprefix("project_")] = entry[key]
    return {project_json_path(entry["project"]): to_json(project)}


def retention_of(project: dict) -> tuple[str | None, int | None]:
    """(mode, days) of a project.json's retention policy, each None where it has none of its own
    (or none there could be: edited by hand): the server's default applies."""
    mode, days = project.get("retention_mode"), project.get("retention_days")
    return (mode if mode in get_args(RetentionMode) else None,
            days if isinstance(days, int) and not isinstance(days, bool) and days >= 1 else None)


def keeping_what_is_known(content: bytes, project: dict, written: dict) -> bytes:
    """A project.json (`content`, parsed: `project`) that replaces `written` (as new, by version:
    both 0 for a file written before versions, or a project unchanged since), with what `written`
    knows that its entry does not. An entry that says nothing of the project's state (a message's:
    whose folder it is, no more) keeps the written one's whole (archived_ts or unarchived_ts, its
    version): a message sent before the project was archived, written late, must not make the archive
    say it is active. One that does not know when the project was made (queued by a version before
    it said) keeps created_ts: a project is made once, so the time never goes stale."""
    says_no_state = project.keys() <= {"slug", "human_key"}
    kept = {key: value for key, value in written.items() if key not in project and (says_no_state or key == "created_ts")}
    return to_json({**project, **kept}) if kept else content


def version_of(document: dict) -> int:
    """The version of the change a JSON file of the archive describes (project.json, a profile, a
    reservation: outbox.new_versions); 0 for one that does not say (written before versions, or
    by an entry that does not know, as a message's project.json). Of two, the writer keeps the
    newer, so an update delivered late (docs/archive.md, "Order of updates") never overwrites it.
    Anything but the digits of a 63-bit id (an archive edited by hand) counts as 0 too: the
    writer and a restore must not fail on it."""
    version = document.get("version")
    if isinstance(version, str) and _VERSION.fullmatch(version) and int(version) < 2**63:
        return int(version)
    return 0


_VERSION = re.compile(r"[0-9]{1,19}")


def project_json_path(slug: str) -> str:
    return f"{project_dir(slug)}/project.json"


def message_path(entry: dict) -> str:
    """Where a message's canonical file is."""
    return f"{project_dir(entry['project'])}/messages/{second_dir(entry['created_ts'])}/{message_name(entry)}"


def message_name(entry: dict) -> str:
    return f"{file_timestamp(entry['created_ts'])}__{subject_slug(entry['subject'])}__{int(entry['id'])}.md"


RENDERERS = {"message": message_files, "agent": agent_files, "reservation": reservation_files, "contact": contact_files,
             "mark": mark_files, "product": product_files, "project": project_file}


def document(entry: dict) -> bytes:
    """`---json` front matter, then the markdown body."""
    # PROJECT_STATE: project.json's (rebuild's entries carry it), not the message's
    front = {key: value for key, value in entry.items() if key not in ("kind", "body_md", *PROJECT_STATE)}
    return f"---json\n{json.dumps(front, indent=2, ensure_ascii=False, sort_keys=True)}\n---\n\n{entry['body_md']}\n".encode()


def parse_document(content: bytes) -> dict:
    """The inverse of `document`: the message entry a canonical file holds."""
    text = content.decode()
    head, _, body = text.removeprefix("---json\n").partition("\n---\n\n")
    return {"kind": "message", **json.loads(head), "body_md": body[:-1] if body.endswith("\n") else body}


def message_of(content: bytes) -> dict | None:
    """The message entry a canonical file holds, or None for a file edited (by hand) into no message document."""
    try:
        return parse_document(content)
    except (ValueError, TypeError):  # not JSON, not UTF-8, or a front matter that is no JSON object
        return None


def json_of(content: bytes | None) -> dict | None:
    """A JSON file's object (project.json, a profile, a reservation...); None for no file, or for
    one edited into no JSON object (by hand, or a merge's conflict markers left in): it says
    nothing, and the next entry or rebuild that writes it replaces it."""
    if content is None:
        return None
    try:
        document = json.loads(content)
    except ValueError:  # (a UnicodeDecodeError too)
        return None
    return document if isinstance(document, dict) else None


def to_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def project_dir(slug: str) -> str:
    if not SLUG_PATTERN.fullmatch(slug):
        raise ValueError(f"not a project slug: {slug!r}")
    return f"projects/{slug}"


def agent_dir(slug: str, name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"not an agent name: {name!r}")
    return f"{project_dir(slug)}/agents/{name}"


def home(address: str, project: str) -> tuple[str, str]:
    """(project slug, name) of a recipient: Name, or Name@project for another project's agent."""
    name, _, slug = address.partition("@")
    return slug or project, name


def second_dir(timestamp: str) -> str:
    """2026-11-24T07:12:38.123456+00:00 -> 2026/11/24/07/12/38."""
    check_timestamp(timestamp)
    return "/".join((timestamp[:4], timestamp[5:7], timestamp[8:10], timestamp[11:13], timestamp[14:16], timestamp[17:19]))


FILE_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})(?:-\d+)?Z__[a-z0-9-]+__\d+\.md")


def second_dir_of_name(name: str) -> str | None:
    """The folder a message file of this name belongs in (None: not a message file name),
    from the timestamp its name starts with: what moves an old flat archive's files."""
    match = FILE_NAME.fullmatch(name)
    return "/".join(match.groups()) if match else None


def file_timestamp(timestamp: str) -> str:
    """2026-11-24T07:12:38.123456+00:00 -> 2026-11-24T07-12-38-123456Z: no colons (Windows)."""
    check_timestamp(timestamp)
    return _TIME_SEPARATORS.sub("-", timestamp.removesuffix("+00:00")) + "Z"


def check_timestamp(timestamp: str) -> None:
    if not TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise ValueError(f"not a stored UTC timestamp: {timestamp!r}")


def subject_slug(subject: str) -> str:
    return _NOT_IN_SLUG.sub("-", subject.lower()).strip("-")[:60].strip("-") or "message"


def one_line(text: str) -> str:
    return " ".join(text.split())[:120]
