"""What the LLM returns is checked where it enters (llm.py): hostile shapes, huge answers.

Every test goes through the real openai client to the stand-in LLM (devtools/fake_llm.py),
told to answer the way a broken or hostile server would, as JSON and streamed.
"""

import asyncio
import time

import pytest

from conversations import llm as llm_code
from conversations.models import Conversation, Message
from devtools.sse import parse_events

from .client import post_chat, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

BOTH = pytest.mark.parametrize("streamed", [False, True], ids=["json", "streamed"])


def ask(client, streamed: bool, message: str = "Hi") -> tuple[str | None, dict]:
    """One question, as a JSON or a streamed turn: (the reply, None) or (None, the error)."""
    if not streamed:
        status, body = post_chat(client, message=message)
        if status == 200:
            return body["reply"], body
        assert status == 502, body
        return None, body["error"]
    response = client.post(
        "/api/chat", data={"message": message}, content_type="application/json",
        headers={"Accept": "text/event-stream"},
    )
    events = parse_events(read_stream(response))
    name, data = events[-1]
    if name == "done":
        assert "".join(d["text"] for n, d in events if n == "delta") == data["reply"]
        return data["reply"], data
    assert name == "error", events
    return None, data["error"]


def stored_reply() -> Message:
    return Message.objects.get(role="assistant")


# --- The model's name and the token counts ----------------------------------------


@BOTH
def test_a_model_name_too_long_to_store_is_the_configured_model(client, llm, streamed):
    llm.control("ok", model="m" * 300)

    reply, _ = ask(client, streamed)

    assert reply == "Echo: Hi"
    assert stored_reply().model == "fake-model"


@BOTH
def test_a_model_name_that_is_not_text_is_the_configured_model(client, llm, streamed):
    llm.control("ok", model={"name": "x"})

    assert ask(client, streamed)[0] == "Echo: Hi"
    assert stored_reply().model == "fake-model"


@BOTH
@pytest.mark.parametrize(
    "count", [-5, 2**40, "12", 12.5, 12.0, True, None, [3]], ids=repr,
)
def test_token_counts_that_are_not_sane_whole_numbers_are_not_stored(client, llm, streamed, count):
    llm.control("ok", usage={"prompt_tokens": count, "completion_tokens": count, "total_tokens": count})

    assert ask(client, streamed)[0] == "Echo: Hi"
    reply = stored_reply()
    assert (reply.prompt_tokens, reply.completion_tokens) == (None, None)


@BOTH
@pytest.mark.parametrize("usage", ["lots", [1, 2], 7], ids=repr)
def test_a_usage_that_is_not_an_object_is_ignored(client, llm, streamed, usage):
    llm.control("ok", usage=usage)

    assert ask(client, streamed)[0] == "Echo: Hi"
    assert stored_reply().prompt_tokens is None


@BOTH
def test_sane_token_counts_are_kept(client, llm, streamed):
    llm.control("ok", usage={"prompt_tokens": 0, "completion_tokens": 4321, "total_tokens": 4321})

    ask(client, streamed)

    assert (stored_reply().prompt_tokens, stored_reply().completion_tokens) == (0, 4321)


# --- The content ---------------------------------------------------------------------


@BOTH
def test_a_nul_character_is_taken_out_of_the_reply(client, llm, streamed):
    llm.control("ok", reply="before\x00 after\x00")

    reply, _ = ask(client, streamed)

    assert reply == "before after"
    assert stored_reply().content == "before after"


@BOTH
def test_a_lone_surrogate_is_replaced(client, llm, streamed):
    llm.control("ok", reply="broken \ud800 text \udfff end")

    reply, _ = ask(client, streamed)

    assert reply == "broken \ufffd text \ufffd end"
    assert stored_reply().content == reply


@BOTH
@pytest.mark.parametrize("content", [12345, 1.5, True, ["Echo"], {"text": "Echo"}], ids=repr)
def test_content_that_is_not_text_is_a_clean_502_and_the_question_can_be_retried(
    client, llm, streamed, content
):
    llm.control("ok", content=content)

    reply, error = ask(client, streamed)

    assert reply is None
    assert error["code"] == "llm_unavailable"
    conversation = Conversation.objects.get()
    assert conversation.failed_turns == 1
    assert [(m.role, m.status) for m in conversation.messages.all()] == [("user", "failed")]

    llm.control("ok")
    status, retried = post_chat(client, message="Hi", sessionId=str(conversation.session_id))
    assert (status, retried["reply"]) == (200, "Echo: Hi")


# --- A huge answer ---------------------------------------------------------------------

NOTE = getattr(llm_code, "CUT_NOTE", "\n\n*[This reply was cut short because it was too long.]*")
HUGE = 2 * 1024 * 1024  # characters: an upstream that ignores max_tokens


def huge_answer(fake, **params) -> None:
    # 2 MiB of words, streamed 100 characters a chunk unless told otherwise.
    fake.control("ok", **{"reply": "lorem ipsum dolor sit amet, ", "repeat": HUGE // 28, "piece_chars": 100,
                          "ignore_max_tokens": True, **params})


@BOTH
def test_a_huge_answer_is_cut_at_the_cap_with_a_note_and_stored_so(client, llm, settings, streamed):
    settings.CHAT_REPLY_MAX_CHARS = 5000
    huge_answer(llm)

    reply, _ = ask(client, streamed)

    assert reply is not None
    assert reply.endswith(NOTE)
    assert len(reply) == 5000 + len(NOTE)
    assert reply.startswith("lorem ipsum dolor sit amet, lorem")
    stored = stored_reply()
    assert (stored.content, stored.status) == (reply, "complete")


def test_a_huge_streamed_answer_stops_reading_and_closes_the_upstream_call(client, llm, settings):
    settings.CHAT_REPLY_MAX_CHARS = 5000
    huge_answer(llm, chunk_delay=0.001)  # about 20 s to send it all

    started = time.monotonic()
    reply, _ = ask(client, streamed=True)

    assert reply is not None and reply.endswith(NOTE)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while llm.stats()["cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert llm.stats() == {**llm.stats(), "cancelled": 1, "active": 0}


def test_a_reply_at_the_cap_is_not_cut(client, llm, settings):
    settings.CHAT_REPLY_MAX_CHARS = 12
    llm.control("ok", reply="twelve chars")

    assert ask(client, streamed=True)[0] == "twelve chars"


def test_a_json_body_beyond_the_byte_limit_is_a_clean_502(client, llm, settings, monkeypatch):
    monkeypatch.setattr(llm_code, "RESPONSE_MAX_BYTES", 256 * 1024, raising=False)
    huge_answer(llm)

    reply, error = ask(client, streamed=False)

    assert reply is None and error["code"] == "llm_unavailable"


async def _read_measuring_the_loop(stream: llm_code.ReplyStream) -> tuple[str, float]:
    """The whole reply, and the longest time the event loop was blocked while it was read."""
    loop = asyncio.get_running_loop()
    gaps = [0.0]
    tick = 0.002

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            gaps.append(now - last - tick)
            last = now

    stream.client = llm_code.Client()  # the worker's client, made once (its making is not measured)
    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    del gaps[1:]
    try:
        text = "".join([piece async for piece in stream])
    finally:
        ticking.cancel()
        await stream.client.close()
    return text, max(gaps)


@BOTH
@pytest.mark.parametrize("pieces", [100, 0], ids=["100-char-pieces", "word-pieces"])
def test_a_huge_answer_does_not_block_the_event_loop(llm, settings, streamed, pieces):
    settings.CHAT_LLM_DEADLINE = 20.0
    huge_answer(llm, piece_chars=pieces)
    stream = llm_code.ReplyStream([{"role": "user", "content": "Hi"}], streamed=streamed)

    started = time.process_time()
    text, blocked = asyncio.run(_read_measuring_the_loop(stream))
    cpu = time.process_time() - started

    print(f"\n2 MiB answer, {'streamed' if streamed else 'JSON'} ({pieces or 'word'} pieces): loop blocked at most "
          f"{blocked * 1000:.1f} ms, {cpu * 1000:.0f} ms of CPU")
    assert text == stream.text
    assert len(text) <= getattr(settings, "CHAT_REPLY_MAX_CHARS", 20000) + len(NOTE)
    assert blocked < 0.5  # the goal is 50 ms; generous, for a noisy machine
