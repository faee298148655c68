-- Per-agent identity tokens (chalicelib/agent_tokens.py). Only a SHA-256 of each token is
-- stored; the token itself is shown once, by register_agent / create_agent_identity /
-- rotate_agent_token. One current token per agent.
CREATE TABLE agent_tokens (
    agent_id INTEGER PRIMARY KEY REFERENCES agents(id),
    token_sha256 TEXT NOT NULL,
    created_ts TEXT NOT NULL
);
