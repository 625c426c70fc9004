"""Turns posted at the same moment on one session, as real HTTP requests to the deployed site."""

from concurrent.futures import ThreadPoolExecutor

from conversations.models import Conversation

from .client import SiteClient


def test_parallel_turns_on_one_session_never_interleave(live_site, llm):
    api = SiteClient(live_site)
    status, first, _ = api.send({"message": "start"})
    assert status == 200
    llm.control("ok", delay=0.5)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda n: api.send({"message": f"parallel {n}", "sessionId": first["sessionId"]}),
            range(8),
        ))

    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) >= 1
    assert set(statuses) <= {200, 409}
    for status, body, headers in results:
        if status == 409:
            assert body["error"]["code"] == "turn_in_progress"
            assert headers["Retry-After"] in {"1", "2"}
    answered = {body["reply"] for status, body, _ in results if status == 200}

    messages = list(Conversation.objects.get(session_id=first["sessionId"]).messages.all())
    # Strictly question, reply, question, reply...: each reply right after its own question.
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert [m.role for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    for question, reply in zip(messages[::2], messages[1::2], strict=True):
        assert reply.content == f"Echo: {question.content}"
    assert {m.content for m in messages[3::2]} == answered


def test_a_double_click_with_one_client_message_id_stores_the_question_once(live_site, llm):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "start"})
    llm.control("ok", delay=0.5)
    body = {"message": "once", "sessionId": first["sessionId"], "clientMessageId": "click-1"}

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: api.send(body), range(2)))

    assert sorted(status for status, _, _ in results) in ([200, 409], [200, 200])
    conversation = Conversation.objects.get(session_id=first["sessionId"])
    assert conversation.messages.filter(content="once").count() == 1
    assert conversation.messages.filter(content="Echo: once").count() == 1
