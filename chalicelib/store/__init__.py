"""Where data lives: SQLite connections and migrations, Turso replicas, the sidecar search index."""
