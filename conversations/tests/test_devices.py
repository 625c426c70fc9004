"""Continue on another device, and "Not you?" (devices.py), against the site as deployed
(gunicorn, PostgreSQL, Redis, the fake LLM): links and codes, their single use and expiry, the
lockout for wrong ones, the devices list, ending one browser or all of them, Redis down."""

import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone, translation

from conversations import devices as devices_module
from conversations.models import Conversation, DeviceLink, Session
from devtools.processes import Site

from .client import SiteClient
from .helpers import site_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def offer(api: SiteClient, session_id: str):
    made = api.request("POST", "/api/devices/link", headers={"X-Session-Id": session_id})
    assert made.status == 200, made.body
    return made.body


def token_of(made: dict) -> str:
    return made["link"].split("#join=", 1)[1]


def join(api: SiteClient, headers: dict | None = None, **body):
    return api.request("POST", "/api/devices/join", body, headers=headers)


def devices(api: SiteClient, session_id: str):
    return api.request("GET", "/api/devices", headers={"X-Session-Id": session_id})


def end(api: SiteClient, session_id: str, device):
    return api.request("POST", "/api/devices/end", {"device": device}, headers={"X-Session-Id": session_id})


PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/126.0 Mobile Safari/537.36"}
LAPTOP = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}


def test_a_link_brings_a_second_browser_into_the_conversation_under_its_own_session(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Where is my parcel?", headers=PHONE).ok()["sessionId"]
    made = api.request("POST", "/api/devices/link", headers={"X-Session-Id": phone, **PHONE}).ok()

    assert made["link"].startswith(live_site.url + "/#join=") and len(token_of(made)) == 43
    assert made["qrSvg"].startswith("<svg") and made["expiresInSeconds"] == 600
    joined = join(api, LAPTOP, token=token_of(made)).ok()
    laptop = joined["sessionId"]

    assert laptop != phone and uuid.UUID(laptop).version == 4
    # The whole history, then both continue in one conversation, each under its own id.
    assert [m["content"] for m in api.history(laptop).ok()["messages"]] == [
        "Where is my parcel?", "Echo: Where is my parcel?"]
    assert api.chat("From the laptop", laptop).ok()["sessionId"] == laptop
    assert api.chat("From the phone", phone).ok()["sessionId"] == phone
    assert [m["content"] for m in api.history(phone).ok()["messages"]][-4:] == [
        "From the laptop", "Echo: From the laptop", "From the phone", "Echo: From the phone"]
    assert Conversation.objects.count() == 1
    # The browser and when, no more; which is this one.
    listed = devices(api, laptop).ok()["devices"]
    assert [(d["label"], d["current"]) for d in listed] == [("Chrome on Android", False), ("Firefox on Linux", True)]
    assert set(listed[0]) == {"device", "label", "joinedAt", "lastSeenAt", "current"}
    # Named in the customer's language (the page's, else Accept-Language), not the one it was seen in.
    german = api.request("GET", "/api/devices", headers={"X-Session-Id": laptop, "Accept-Language": "de"}).ok()
    assert [d["label"] for d in german["devices"]] == ["Chrome unter Android", "Firefox unter Linux"]
    # Used once: the link and its code are gone.
    again = join(api, token=token_of(made))
    assert again.status == 404 and again.body["error"]["code"] == "join_not_found"
    assert join(api, code=made["code"]).body["error"]["code"] == "join_not_found"


def test_a_link_opened_where_its_conversation_is_open_already_keeps_that_session_and_the_link(live_site):
    """An emailed link clicked in the browser that holds the conversation: no second session for
    it (a stale device in the list), and the link still works on another device."""
    api = SiteClient(live_site)
    phone = api.chat("Where is my parcel?", headers=PHONE).ok()["sessionId"]
    other = api.chat("Another customer").ok()["sessionId"]
    token = token_of(offer(api, phone))
    mine = {"X-Session-Id": phone, **PHONE}

    # What the page asks first, then on the customer's word: nothing redeemed either time.
    assert join(api, mine, token=token, check=True).ok() == {
        "sessionId": phone, "newSession": False, "sameConversation": True}
    assert join(api, mine, token=token).ok() == {"sessionId": phone, "newSession": False, "sameConversation": True}
    assert Session.objects.count() == 2 and DeviceLink.objects.count() == 1

    # Another conversation's browser: check says it would join and redeems nothing; then it joins.
    theirs = {"X-Session-Id": other, **LAPTOP}
    assert join(api, theirs, token=token, check=True).ok() == {
        "sessionId": None, "newSession": False, "sameConversation": False}
    assert DeviceLink.objects.count() == 1
    joined = join(api, theirs, token=token).ok()
    assert joined["newSession"] and joined["sessionId"] not in (phone, other)
    assert DeviceLink.objects.count() == 0
    # A check of a used link is refused as a join is.
    assert join(api, mine, token=token, check=True).body["error"]["code"] == "join_not_found"
    assert join(api, token=token, check="yes").body["error"]["code"] == "invalid_join"
    assert join(api, {"X-Session-Id": "junk"}, token=token).body["error"]["code"] == "invalid_session_id"


def test_a_code_typed_loosely_joins_once_and_of_eight_at_once_exactly_one_wins(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    code = offer(api, phone)["code"]
    assert len(code) == 11 and code[5] == "-"

    typed = code.lower().replace("-", " ").replace("0", "o")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: join(api, code=typed), range(8)))

    assert sorted(a.status for a in answers) == [200] + [404] * 7
    assert {a.body["error"]["code"] for a in answers if a.status == 404} == {"join_not_found"}
    assert Session.objects.count() == 2


def test_an_expired_code_is_refused_with_a_clear_message(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    made = offer(api, phone)
    DeviceLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    refused = join(api, code=made["code"])

    assert refused.status == 410 and refused.body["error"]["code"] == "join_expired"
    assert "expired" in refused.body["error"]["message"]
    assert join(api, token=token_of(made)).status == 410
    assert Session.objects.count() == 1


def test_a_get_of_the_link_consumes_nothing_and_no_log_or_redis_key_holds_the_token_or_code(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    made = offer(api, phone)
    token, code = token_of(made), made["code"]

    # What a link previewer or a scanner fetches: the page (the fragment is never sent).
    page = api.request("GET", "/")
    assert page.status == 200 and token not in page.body
    assert api.request("GET", "/api/devices/join").status == 405
    assert api.request("HEAD", "/?join=" + token).status == 200
    assert DeviceLink.objects.count() == 1

    joined = join(api, token=token).ok()
    assert joined["sessionId"]
    log = live_site.log()
    assert token not in log and code not in log and code.replace("-", "") not in log
    assert token not in str(list(DeviceLink.objects.values()))


def test_not_you_ends_this_browser_only_and_its_next_message_starts_afresh(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    laptop = join(api, token=token_of(offer(api, phone))).ok()["sessionId"]

    assert end(api, laptop, "this").status == 204

    gone = api.history(laptop)
    assert gone.status == 404 and gone.body["error"]["code"] == "session_not_found"
    assert api.updates(laptop, after=-1).status == 404
    fresh = api.chat("Hello?", laptop).ok()
    assert fresh["newSession"] is True and fresh["sessionId"] not in (laptop, phone)
    assert [m["content"] for m in api.history(phone).ok()["messages"]] == ["Hi", "Echo: Hi"]
    assert Conversation.objects.count() == 2


def test_a_customer_ends_another_device_from_the_list(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    laptop = join(api, token=token_of(offer(api, phone))).ok()["sessionId"]
    [_, other] = devices(api, phone).ok()["devices"]

    assert end(api, phone, other["device"]).status == 204

    assert api.history(laptop).status == 404
    assert [d["current"] for d in devices(api, phone).ok()["devices"]] == [True]
    missing = end(api, phone, other["device"])
    assert missing.status == 404 and missing.body["error"]["code"] == "device_not_found"
    # Another conversation's device cannot be ended from here.
    stranger = api.chat("Someone else").ok()["sessionId"]
    [theirs] = devices(api, stranger).ok()["devices"]
    assert end(api, phone, theirs["device"]).status == 404
    assert api.history(stranger).status == 200


def test_delete_conversation_ends_every_device(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    laptop = join(api, token=token_of(offer(api, phone))).ok()["sessionId"]
    tablet = join(api, code=offer(api, laptop)["code"]).ok()["sessionId"]

    assert api.forget(tablet).status == 204

    assert [api.history(s).status for s in (phone, laptop, tablet)] == [404, 404, 404]
    assert not Session.objects.exists() and not DeviceLink.objects.exists()


@pytest.mark.parametrize(("body", "code"), [
    ({}, "invalid_join"),
    ({"token": "x" * 43, "code": "ABCDE-FGHJK"}, "invalid_join"),
    ({"token": "short"}, "invalid_join_token"),
    ({"token": 5}, "invalid_join_token"),
    ({"code": "ABC"}, "invalid_join_code"),
    ({"code": "ABCDE-FGHJU"}, "invalid_join_code"),
    ({"code": ["ABCDEFGHJK"]}, "invalid_join_code"),
])
def test_malformed_joins_are_refused_with_a_code(live_site, body, code):
    refused = join(SiteClient(live_site), **body)
    assert refused.status == 400 and refused.body["error"]["code"] == code


@pytest.mark.parametrize("device", [None, "all", 0, -1, 1.5, True, 2**63, "1"])
def test_malformed_device_numbers_are_refused_with_a_code(live_site, device):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    refused = end(api, phone, device)
    assert refused.status == 400 and refused.body["error"]["code"] == "invalid_device"


def test_device_endpoints_refuse_unknown_sessions(live_site):
    api = SiteClient(live_site)
    unknown = str(uuid.uuid4())
    for answer in (api.request("POST", "/api/devices/link", headers={"X-Session-Id": unknown}),
                   devices(api, unknown), end(api, unknown, "this")):
        assert answer.status == 404 and answer.body["error"]["code"] == "session_not_found"
    assert api.request("POST", "/api/devices/link").body["error"]["code"] == "invalid_session_id"


def test_fifty_wrong_codes_from_one_address_are_refused_and_locked_out(live_site, fake_llm_server, own_redis):
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url, CHAT_TRUSTED_PROXIES="127.0.0.1",
                         CHAT_DEVICE_JOIN_FAILURES_IP="10/h"))
    try:
        api = SiteClient(site)
        phone = api.chat("Hi").ok()["sessionId"]
        code = offer(api, phone)["code"]
        guesser = {"X-Forwarded-For": "198.51.100.7"}
        wrong = [c for c in ("0000000000", "1111111111", "2222222222") if c != code.replace("-", "")][0]

        answers = [join(api, guesser, code=wrong) for _ in range(50)]

        assert [a.status for a in answers] == [404] * 10 + [429] * 40
        assert answers[-1].body["error"]["code"] == "join_locked"
        assert 0 < int(answers[-1].headers["Retry-After"]) <= 3600
        # Locked out: the right code too, from that address; from another, it works.
        assert join(api, guesser, code=code).status == 429
        assert join(api, {"X-Forwarded-For": "203.0.113.9"}, code=code).status == 200
    finally:
        site.stop()


def test_wrong_codes_from_many_addresses_lock_joining_for_the_whole_site(live_site, fake_llm_server, own_redis):
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url, CHAT_TRUSTED_PROXIES="127.0.0.1",
                         CHAT_DEVICE_JOIN_FAILURES_SITE="20/h"))
    try:
        api = SiteClient(site)
        token = token_of(offer(api, api.chat("Hi").ok()["sessionId"]))
        answers = [join(api, {"X-Forwarded-For": f"198.51.100.{n}"}, code="0000000000") for n in range(25)]

        assert [a.status for a in answers] == [404] * 20 + [429] * 5
        assert join(api, {"X-Forwarded-For": "203.0.113.9"}, token=token).status == 429
    finally:
        site.stop()


def test_with_redis_down_devices_join_and_end_and_wrong_codes_are_still_limited(live_site, fake_llm_server,
                                                                                 own_redis):
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url, CHAT_DEVICE_JOIN_FAILURES_IP="5/h"))
    try:
        api = SiteClient(site)
        phone = api.chat("Hi").ok()["sessionId"]
        own_redis.stop()

        laptop = join(api, token=token_of(offer(api, phone))).ok()["sessionId"]
        assert api.chat("From the laptop", laptop, timeout=10).ok()["sessionId"] == laptop
        assert len(devices(api, phone).ok()["devices"]) == 2
        assert end(api, phone, "this").status == 204
        assert api.history(phone).status == 404 and api.history(laptop).status == 200
        # Counted in each worker while Redis is away (limits.py): never unlimited.
        statuses = [join(api, code="0000000000").status for _ in range(30)]
        assert 429 in statuses and set(statuses) <= {404, 429}
    finally:
        site.stop()


def test_a_device_is_seen_by_its_page_at_most_once_a_minute_and_never_by_a_turn(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    long_ago = timezone.now() - timedelta(hours=2)

    Session.objects.update(last_seen_at=long_ago)
    api.chat("A turn", phone).ok()
    assert Session.objects.get().last_seen_at == long_ago  # a turn writes no session

    assert api.updates(phone, after=-1).status == 200  # the page's long poll
    # Written with the other pages seen in that second (runtime.Sightings).
    seen = wait_for(lambda: (moved := Session.objects.get().last_seen_at) > long_ago and moved)
    assert seen > timezone.now() - timedelta(minutes=1)
    assert api.updates(phone, after=-1).status == 200
    time.sleep(1.5)  # past the next batch of seen pages
    assert Session.objects.get().last_seen_at == seen  # within the minute: not again

    Session.objects.update(last_seen_at=long_ago)
    assert api.history(phone).status == 200  # the page loading the conversation
    assert Session.objects.get().last_seen_at > long_ago


def test_a_database_that_does_not_answer_refuses_a_join_with_503_and_the_offer_stays(live_site, fake_llm_server):
    site = Site(site_env(fake_llm_server, DATABASE_LOCK_TIMEOUT_MS="300"))
    try:
        api = SiteClient(site)
        made = offer(api, api.chat("Hi").ok()["sessionId"])
        locked, release = threading.Event(), threading.Event()

        def lock_table():
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {DeviceLink._meta.db_table} IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(10)
            connection.close()

        holder = threading.Thread(target=lock_table)
        holder.start()
        locked.wait(5)
        refused = join(api, code=made["code"])
        release.set()
        holder.join()

        assert refused.status == 503 and refused.body["error"]["code"] == "database_unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        assert join(api, code=made["code"]).status == 200  # not used up, and not counted as wrong
        assert "Traceback" not in site.log()
    finally:
        site.stop()


@pytest.mark.parametrize(("user_agent", "label"), [
    (PHONE["User-Agent"], "Chrome · Android"),
    (LAPTOP["User-Agent"], "Firefox · Linux"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "Safari · iPhone"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 "
     "Safari/537.36 Edg/126.0", "Edge · Windows"),
    ("Mozilla/5.0 (Windows NT 10.0) Gecko/20100101", ""),
    ("curl/8.5", ""),
    ("", ""),
])
def test_a_device_is_named_by_its_browser_and_system_and_no_more(user_agent, label):
    assert devices_module.device_label(user_agent) == label


@pytest.mark.parametrize(("label", "english", "german"), [
    ("Firefox · Android", "Firefox on Android", "Firefox unter Android"),
    ("Safari", "Safari", "Safari"),
    ("", "A browser", "Ein Browser"),
])
def test_a_device_is_named_in_the_language_of_whoever_reads_it(label, english, german):
    session = Session(label=label, session_id=uuid.UUID("12345678-0000-4000-8000-000000000000"))
    with translation.override("en"):
        assert session.name == english
        assert str(session) == f"{english} (session 12345678)"
    with translation.override("de"):
        assert session.name == german
        assert str(session) == f"{german} (Sitzung 12345678)"


def test_an_emailed_link_redeemed_ten_times_at_once_joins_once_and_health_stays_quick(live_site):
    api = SiteClient(live_site)
    phone = api.chat("Hi").ok()["sessionId"]
    conversation = Conversation.objects.of_session(phone).get()
    token = devices_module.email_link(conversation.pk)

    with ThreadPoolExecutor(11) as pool:
        health = pool.submit(lambda: [api.request("GET", "/healthz") for _ in range(5)])
        answers = list(pool.map(lambda _: join(api, token=token), range(10)))

    assert sorted(a.status for a in answers) == [200] + [404] * 9
    assert Session.objects.filter(conversation=conversation).count() == 2
    assert not DeviceLink.objects.exists()
    assert all(probe.status == 200 for probe in health.result())


@pytest.mark.parametrize("language", ["x" * 5000, "de\x00", "\u202e\u0627\u0644", "de-DE;q=abc,,,", "zz-ZZ", "",
                                      "../../etc/passwd", "de\r\nSet-Cookie: a=b"])
def test_junk_languages_in_header_query_and_accept_language_never_fail_a_request(live_site, language):
    api = SiteClient(live_site)
    # As bytes on the wire (UTF-8 where it is not Latin-1); control characters, which the HTTP parser
    # refuses before the site sees them (400), left out.
    safe = "".join(c for c in language if c.isprintable()).encode().decode("latin-1")
    headers = {"X-Chat-Language": safe, "Accept-Language": safe}
    turn = api.request("POST", "/api/chat", {"message": "Hi"}, headers=headers)
    page = api.request("GET", "/?lang=" + urllib.parse.quote(language))

    assert turn.status == 200 and turn.body["reply"]
    assert page.status == 200
    assert "Traceback" not in live_site.log()
