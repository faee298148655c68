"""The git archive: every message, agent profile and file reservation, as files in git.

outbox.py   the rows written in the same transaction as the data (record) and their life
render.py   entry -> {path: bytes}: the pure function every writer uses
gitrepo.py  applies entries to a git repository (dulwich): idempotent, one commit per project
worker.py   local mode: a thread (or `archive drain`) that turns outbox rows into commits
cloud.py    cloud mode: outbox -> SQS FIFO -> the worker function -> push to ARCHIVE_GIT_REMOTE
rebuild.py  the archive written from the database (`archive rebuild`)
verify.py   the archive compared with the database (`archive verify`, doctor)
restore.py  the database from the archive (`db restore-from-archive`, doctor --repair)
"""
