"""What the hot paths were made cheaper by (issue 11: within 5% of before the security work;
bench/hotpath.py measures it) still does what it did."""

import asyncio
import logging

import pytest
import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.ops import logs
from chalicelib.tools import messages, tools_by_name

from .sql import sql


async def nothing(scope, receive, send) -> None:
    pass


def test_uvicorn_builds_no_access_lines(tmp_path):
    """uvicorn formats an access line's arguments (quoting the path) for every request whenever
    its access logger has a handler, even one the level then silences: it must have none. Order
    as in a server: uvicorn sets up its logging, then importing the app runs logs.configure."""
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger, logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.config.Config(nothing, log_level="warning", access_log=True)
        config.load()
        logs.configure(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", log_level="WARNING"))
        assert not logging.getLogger("uvicorn.access").hasHandlers()
        assert HttpToolsProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop).access_log is False
        assert logging.getLogger("uvicorn.error").hasHandlers()  # uvicorn's other messages still reach the log
    finally:
        loop.close()
        for logger, handlers, propagate, level in saved:  # this test process's logging as it was
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


@pytest.mark.parametrize("tool_name, arguments", [
    ("fetch_inbox", {"project_key": "/p", "agent_name": "BlueLake", "registration_token": "secret", "limit": 3}),
    ("send_message", {"project_key": "/p", "sender_name": "BlueLake", "sender_token": "secret", "to": ["GreenCastle"],
                      "subject": "s", "body_md": "b", "idempotency_key": "k1"}),
])
def test_a_handler_gets_its_own_model_without_the_token(tool_name, arguments):
    """The acting agent's token (and an idempotency key) never reach the handler: it gets an
    instance of its own input model, as model_construct would build it, fields set included."""
    tool = tools_by_name()[tool_name]
    seen = []
    wrapped = type(tool.handler)(tool.handler.__code__, {**tool.handler.__globals__}, closure=tuple(
        _cell(lambda db, args: seen.append(args)) if cell.cell_contents is tool.handler.__wrapped__ else cell
        for cell in tool.handler.__closure__))
    given = tool.input.model_validate(arguments)
    wrapped(None, given)
    own_model = type(seen[0])
    expected = own_model.model_construct(given.model_fields_set & own_model.model_fields.keys(),
                                         **{name: getattr(given, name) for name in own_model.model_fields})
    assert own_model is not tool.input and issubclass(tool.input, own_model)
    assert seen[0].__dict__ == expected.__dict__ and seen[0].model_fields_set == expected.model_fields_set
    assert seen[0].model_dump() == expected.model_dump() and seen[0] == expected
    assert not {"registration_token", "sender_token", "idempotency_key"} & (seen[0].__dict__.keys() | seen[0].model_fields_set)


def _cell(value):
    return (lambda: value).__closure__[0]


def test_an_inbox_page_over_the_answer_cap_is_refused_without_bodies(call, project, settings, monkeypatch):
    """A page of more rows than surely fit under the cap (without bodies) is read 20 rows at a
    time and measured together: still refused, and a page under the cap is whole."""
    monkeypatch.setattr(messages, "_SURELY_UNDER_CAP", 10)
    for n in range(25):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"s{n}", body_md="b")
    fetch_inbox = tools_by_name()["fetch_inbox"]
    arguments = {"project_key": project, "agent_name": "GreenCastle", "limit": 25}
    whole = invoke.call(fetch_inbox.json_tool, arguments, settings)
    monkeypatch.setattr(messages, "MAX_ANSWER_BYTES", len(whole) - 200)
    with pytest.raises(Exception) as refused:
        invoke.call(fetch_inbox.json_tool, arguments, settings)
    assert getattr(refused.value, "code", None) == "answer_too_large"
    monkeypatch.setattr(messages, "MAX_ANSWER_BYTES", len(whole))
    assert invoke.call(fetch_inbox.json_tool, arguments, settings) == whole


@pytest.mark.parametrize("arguments, refused", [
    ({"limit": True}, "limit"), ({"include_bodies": 1}, "include_bodies"), ({"urgent_only": 0.0}, "urgent_only"),
    ({"limit": 5, "unread_only": 1}, "unread_only"),
])
def test_flags_and_numbers_are_still_told_apart(arguments, refused):
    """Input._flags_are_not_numbers skips its loop when no flag or number is given; given, it refuses."""
    with pytest.raises(Exception) as error:
        invoke.parse(tools_by_name()["fetch_inbox"], {"project_key": "/p", "agent_name": "BlueLake", **arguments})
    assert getattr(error.value, "code", None) == "invalid_argument" and refused in str(error.value.to_dict())
    assert invoke.parse(tools_by_name()["fetch_inbox"], {"project_key": "/p", "agent_name": "BlueLake", "limit": 5}).limit == 5


def test_a_flag_in_a_numbers_place_is_said_as_json_says_it():
    """It read "Invalid arguments: input: limit: True is not a number" (Python's True, and `input:`)."""
    with pytest.raises(Exception) as error:
        invoke.parse(tools_by_name()["list_projects"], {"limit": True})
    assert error.value.message == "Invalid arguments: limit: true is not a number"


def test_a_send_appends_its_recipient_rows(call, project, settings):
    """A send's recipient rows get time-ordered ids: they go at the table's end, where hashed
    ids put each on a random page that the commit then wrote (~20 of ~60 pages a group commit)."""
    sent = [call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle", "RedStone"],
                 cc=["BlueLake"], subject=f"s{n}", body_md="b")["message"]["id"] for n in range(5)]
    with sql(settings) as conn:
        rows = conn.execute("SELECT message_id FROM message_recipients ORDER BY id").fetchall()
    assert [int(message_id) for (message_id,) in rows] == [int(mid) for mid in sent for _ in range(3)]
    # Marking read and acknowledging find the row by (message, agent).
    receipt = call("acknowledge_message", project_key=project, agent_name="RedStone", message_id=sent[2])
    assert receipt["read_ts"] and receipt["ack_ts"]
    assert call("whois", project_key=project, agent_name="RedStone")["unread"] == 4
