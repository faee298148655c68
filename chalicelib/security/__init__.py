"""Who may call what: authentication, per-agent tokens, rate limits."""
