"""The tests' own SQL on a test's database, whichever the backend (embedded or a Turso replica)."""

from contextlib import contextmanager

from chalicelib.store import db


@contextmanager
def sql(settings):
    """`with sql(settings) as conn:` one transaction, committed (and pushed, on a replica) at the end."""
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        yield conn
