-- embedded only: Turso has no FTS5 (replica mode indexes in a sidecar file, chalicelib/store/search_index.py)
-- A new message enters the full-text index at the end of its write transaction, with every
-- other message of the group-committed batch (chalicelib/tools/messages.py: store_message),
-- not through this trigger: FTS5 flushes its pending index at every SAVEPOINT, and the writer
-- runs each write in one, so the trigger cost ~50 µs a send (bench/README.md). Updates and
-- deletes keep their triggers (retention: bodies archived, messages purged).
DROP TRIGGER messages_fts_insert;
