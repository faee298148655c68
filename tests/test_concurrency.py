"""Every acknowledged send is stored with all its recipients, under 50 concurrent senders."""

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx

from .servers import running_server

SENDERS = 50
PER_SENDER = 8
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


def test_fifty_concurrent_senders_lose_nothing(tmp_path):
    database = tmp_path / "agent_mail.db"
    with running_server(database) as url:
        with httpx.Client(base_url=url) as client:
            client.post("/api/ensure_project", json={"human_key": "/load"}).raise_for_status()
            names = [f"Sender{i}" for i in range(SENDERS)] + ["InboxOne", "InboxTwo"]
            for name in names:
                client.post("/api/register_agent", json={"project_key": "load", "program": "p", "model": "m", "name": name})
            for name in ("InboxOne", "InboxTwo"):
                client.post("/api/set_contact_policy", json={"project_key": "load", "agent_name": name, "policy": "open"})

        def sender(i: int) -> list[str]:
            """Half the senders use REST, half MCP; each returns the ids it was acknowledged."""
            acknowledged = []
            with httpx.Client(base_url=url, timeout=30) as client:
                for n in range(PER_SENDER):
                    args = {"project_key": "load", "sender_name": f"Sender{i}", "to": ["InboxOne"], "cc": ["InboxTwo"],
                            "subject": f"s{i}-{n}", "body_md": "payload"}
                    if i % 2:
                        response = client.post("/api/send_message", json=args)
                        if response.status_code == 200:
                            acknowledged.append(response.json()["message"]["id"])
                    else:
                        rpc = {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                               "params": {"name": "send_message", "arguments": args}}
                        result = client.post("/mcp", json=rpc, headers=MCP_HEADERS).json()["result"]
                        if not result["isError"]:
                            acknowledged.append(result["structuredContent"]["message"]["id"])
            return acknowledged

        with ThreadPoolExecutor(SENDERS) as pool:
            acknowledged = [mid for ids in pool.map(sender, range(SENDERS)) for mid in ids]

    assert len(acknowledged) == SENDERS * PER_SENDER
    with sqlite3.connect(database) as db:
        stored = {str(mid) for (mid,) in db.execute("SELECT id FROM messages")}
        recipients = db.execute(
            "SELECT count(*) FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
            " WHERE a.name IN ('InboxOne', 'InboxTwo')"
        ).fetchone()[0]
    assert stored == set(acknowledged)
    assert recipients == 2 * len(acknowledged)
