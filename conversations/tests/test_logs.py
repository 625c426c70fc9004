"""Logs: one JSON object a line with a request id, and never a whole session id."""

import io
import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.logs import JsonFormatter
from conversations.models import Conversation, Message

from .client import SiteClient, post_chat


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(), logging.getLogger("django"), logging.getLogger("django.request")]
    for logger in loggers:
        logger.addHandler(handler)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)


def assert_no_trace_of(session_id: uuid.UUID, text: str) -> None:
    for form in (str(session_id), session_id.hex, str(session_id).upper()):
        assert form not in text


@pytest.mark.django_db(transaction=True)
def test_a_session_id_never_reaches_the_logs_or_the_llm(client, llm, settings, captured_logs):
    canary = uuid.uuid4()
    conversation = Conversation.objects.create(session_id=canary)
    Message.objects.create(conversation=conversation, seq=0, role="user", content="Hi")
    Message.objects.create(conversation=conversation, seq=1, role="assistant", content="Hello")
    sid = str(canary)
    settings.CHAT_LLM_DEADLINE = 1.0

    assert post_chat(client, message="ok", sessionId=sid)[0] == 200
    llm.control("status", status=500)
    assert post_chat(client, message="fails", sessionId=sid, clientMessageId="c1")[0] == 502
    llm.control("hang")
    assert post_chat(client, message="times out", sessionId=sid)[0] == 504
    llm.control("reset")
    assert post_chat(client, message="reset", sessionId=sid)[0] == 502
    llm.control("malformed")
    assert post_chat(client, message="malformed", sessionId=sid)[0] == 502
    llm.control("ok")
    Message.objects.create(conversation=conversation, seq=20, role="user", content="in flight")
    Message.objects.create(conversation=conversation, seq=21, role="assistant", content="", status="answering",
                           lease_owner=uuid.uuid4(), lease_until=timezone.now() + timedelta(seconds=5))
    assert post_chat(client, message="busy", sessionId=sid)[0] == 409
    Message.objects.filter(seq__in=[20, 21]).delete()
    settings.CHAT_RATE_LIMIT_SESSION = "1/m"
    post_chat(client, message="one", sessionId=sid)
    assert post_chat(client, message="limited", sessionId=sid)[0] == 429
    assert client.get("/api/history", headers={"X-Session-Id": sid}).status_code == 200
    assert client.delete("/api/history", headers={"X-Session-Id": sid}).status_code == 204
    assert client.get("/api/history", headers={"X-Session-Id": sid}).status_code == 404
    assert post_chat(client, message="gone", sessionId=sid)[0] in (200, 429)

    logged = captured_logs.getvalue()
    assert '"route": "api/chat"' in logged and '"status": 502' in logged  # the paths were logged
    assert_no_trace_of(canary, logged)
    assert_no_trace_of(canary, json.dumps(llm.requests()))


def test_the_deployed_site_logs_json_lines_without_session_ids(live_site, llm):
    api = SiteClient(live_site)
    status, first, _ = api.chat("Hi")
    assert status == 200
    canary = uuid.UUID(first["sessionId"])
    llm.control("status", status=500)
    assert api.chat("fails", str(canary))[0] == 502
    llm.control("ok")
    status, _, headers = api.chat("again", str(canary))
    assert status == 200 and headers["x-request-id"]

    log = live_site.log()
    requests = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            assert entry["request_id"] and entry["time"] and entry["level"]
            if entry["message"] == "request":
                requests.append(entry)
    mine = [r for r in requests if r["request_id"] == headers["x-request-id"]]
    assert mine and mine[0]["route"] == "api/chat" and mine[0]["status"] == 200
    assert isinstance(mine[0]["duration_ms"], int) and isinstance(mine[0]["llm_ms"], int)
    assert_no_trace_of(canary, log)


def test_a_streamed_turn_logs_its_line_under_the_request_id(live_site, llm):
    streamed = SiteClient(live_site).chat("Stream me", stream=True, headers={"X-Request-Id": "stream-req-1234"},
                                          timeout=10)
    assert "event: done" in streamed.text

    turns = [json.loads(line) for line in live_site.log().splitlines()
             if line.startswith("{") and '"message": "turn"' in line]
    assert any(entry["request_id"] == "stream-req-1234" for entry in turns), turns[-3:]


class Unprintable:
    def __str__(self):
        raise RuntimeError("no str")

    __repr__ = __str__


FORGED = '\n{"time": "2026-01-01T00:00:00.000Z", "level": "ERROR", "logger": "forged", "message": "x"}\n'
HOSTILE = f"a{FORGED}b\rc\u2028d\u2029e\x85f\x1b[2Jg\x00h\x0bi\x0cj\x1ck{FORGED}"


@pytest.mark.parametrize(("message", "args", "extra"), [
    (HOSTILE, (), {}),
    ("customer wrote %s", (HOSTILE,), {}),
    ("%s and %s", (HOSTILE,), {}),  # arguments that do not fit the message
    ("%d", (HOSTILE,), {}),
    ("extra", (), {"text": HOSTILE, "nested": {"list": [HOSTILE]}}),
    ("extra that is no JSON", (), {"keys": {(1, 2): HOSTILE}, "object": Unprintable()}),
    ("unprintable %s", (Unprintable(),), {}),
])
def test_every_record_is_one_json_line_whatever_it_holds(message, args, extra):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.hostile")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args, extra=extra)
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logger.exception(message, *args, extra=extra, stack_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    lines = stream.getvalue().split("\n")
    assert lines.pop() == ""  # each record ends its line
    assert len(lines) == 2, lines
    for line in lines:
        entry = json.loads(line)
        assert entry["logger"] == "test.hostile" and line.isascii()
    assert "forged" in json.loads(lines[1])["exception"]  # the exception's text is kept, escaped
