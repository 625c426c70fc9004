"""The email to staff when a customer asks for a person (handoff.py): the customer's words only
quoted, after the site's own link; caps per client address and for the site, with a digest of what
was held back; and a console backend that prints nothing that passes for a log record."""

import email
import json
import re
import time
from pathlib import Path

import pytest

from conversations import handoff
from conversations.models import Conversation
from devtools.processes import Site

from .client import SiteClient, post_chat, post_handoff
from .helpers import site_env

FORGED_LOG = '{"level": "ERROR", "logger": "forged", "message": "x"}'
# Every kind of line break Python, mail readers or terminals know, each followed by a line that
# would pass for ours.
BREAKS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
HOSTILE = "I want to talk to a human about this:\n" + FORGED_LOG + "".join(
    f"{brk}Answer it: https://evil.example/{n}/" for n, brk in enumerate(BREAKS))


@pytest.fixture(params=["local", "redis"])
def counted(request, settings):
    """Where the caps are counted: this process (no Redis), or Redis (REDIS_URL, keys of this test's own)."""
    if request.param == "redis":
        return request.getfixturevalue("shared_redis")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return None


def held_for(body: str) -> set[int]:
    """The conversations a digest links to."""
    return {int(pk) for pk in re.findall(r"/admin/conversations/conversation/(\d+)/change/", body)}


# --- the body: the customer's words quoted, the link ours and first --------------------


@pytest.mark.django_db(transaction=True)
def test_the_customers_words_are_quoted_line_by_line_after_the_sites_own_absolute_link(client, settings,
                                                                                        mailoutbox):
    settings.CHAT_HANDOFF_EMAILS = ["support@example.com"]
    settings.CHAT_SITE_URL = "https://chat.example.com"
    assert post_chat(client, message=HOSTILE)[0] == 200
    handoff.flush_email()

    [sent] = mailoutbox
    conversation = Conversation.objects.get()
    lines = sent.body.splitlines()  # splits at every one of BREAKS, were one left raw
    link = f"https://chat.example.com/admin/conversations/conversation/{conversation.pk}/change/"
    start = next(n for n, line in enumerate(lines) if line.startswith(">"))
    ours, quote = lines[:start], lines[start:]
    assert "Their latest message, quoted: the customer's words, not ours (a link or an" in ours
    assert ours.index(link) < len(ours) - 3  # our link comes first
    assert all(line.startswith(">") for line in quote), quote
    assert quote[0] == "> I want to talk to a human about this:"
    assert not [line for line in ours if "evil.example" in line or "forged" in line]
    assert [line for line in quote if "evil.example" in line] == [
        f"> Answer it: https://evil.example/{n}/" for n in range(len(BREAKS))]
    assert f"> {FORGED_LOG}" in quote
    assert sent.subject == f"Conversation {conversation.reference} is waiting for a person"
    assert max(len(line) for line in lines) <= 100  # short lines: the mail is sent as it is, not re-encoded


@pytest.mark.django_db(transaction=True)
def test_a_long_message_is_quoted_in_part_and_control_characters_escaped(client, settings, mailoutbox):
    settings.CHAT_HANDOFF_EMAILS = ["support@example.com"]
    assert post_chat(client, message="I want to talk to a human about \x1b]8;;https://evil.example\x07 " + "x" * 3000)[0] == 200
    handoff.flush_email()

    body = mailoutbox[0].body
    assert "\x1b" not in body and "\x07" not in body and "\\x1b]8;;https://evil.example\\x07" in body
    assert body.count("x") < 600 and "…" in body
    assert "/admin/conversations/conversation/" in body  # a path when CHAT_SITE_URL is not set


# --- the caps and the digest, in this process (no Redis) ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_address_gets_at_most_its_cap_of_emails_then_one_digest(client, settings, mailoutbox, counted):
    settings.CHAT_HANDOFF_EMAILS = ["support@example.com"]
    settings.CHAT_HANDOFF_EMAILS_PER_ADDRESS, settings.CHAT_HANDOFF_EMAILS_PER_HOUR = 3, 30
    settings.CHAT_HANDOFF_DIGEST_MINUTES = 0.05
    statuses = [post_handoff(client)[0] for _ in range(30)]
    handoff.flush_email()
    assert statuses == [200] * 30
    assert len(mailoutbox) == 3

    handoff.flush_digests()

    digests = mailoutbox[3:]
    assert 1 <= len(digests) <= 2  # one per period: two if the 30 requests straddled a period's end
    emailed = {int(re.search(r"/conversation/(\d+)/", m.body).group(1)) for m in mailoutbox[:3]}
    held = set().union(*(held_for(digest.body) for digest in digests))
    assert held == set(Conversation.objects.values_list("pk", flat=True)) - emailed and len(held) == 27
    assert Conversation.objects.filter(handoff="waiting").count() == 30  # all in the queue
    assert "/admin/conversations/waitingconversation/" in digests[0].body


@pytest.mark.django_db(transaction=True)
def test_the_site_wide_cap_holds_across_addresses(client, settings, mailoutbox, counted):
    settings.CHAT_HANDOFF_EMAILS = ["support@example.com"]
    settings.CHAT_HANDOFF_EMAILS_PER_ADDRESS, settings.CHAT_HANDOFF_EMAILS_PER_HOUR = 3, 5
    settings.CHAT_HANDOFF_DIGEST_MINUTES = 0.05
    for n in range(12):
        client.post("/api/handoff", data="{}", content_type="application/json", REMOTE_ADDR=f"198.51.100.{n}")
    handoff.flush_email()
    assert len(mailoutbox) == 5

    handoff.flush_digests()

    assert len(set().union(*(held_for(digest.body) for digest in mailoutbox[5:]))) == 7


# --- the site served the Procfile's way -------------------------------------------------


def sent_mail(directory: Path) -> list[email.message.Message]:
    """What the file-based email backend wrote, every message."""
    messages = []
    for path in sorted(directory.glob("*.log")):
        for text in path.read_text().split("\n" + "-" * 79 + "\n"):
            if text.strip():
                messages.append(email.message_from_string(text))
    return messages


def body(message: email.message.Message) -> str:
    return message.get_payload(decode=True).decode()  # type: ignore[union-attr]


def wait_for_mail(site: Site, directory: Path, done, timeout: float = 60) -> list[email.message.Message]:
    deadline = time.monotonic() + timeout
    while not done(messages := sent_mail(directory)):
        assert time.monotonic() < deadline, ([m["Subject"] for m in messages], site.log()[-3000:])
        time.sleep(0.2)
    return messages


def digests(messages) -> list[email.message.Message]:
    return [m for m in messages if "more conversation(s) waiting" in m["Subject"]]


def emailing_site(fake_llm_server, tmp_path: Path, **env: str) -> Site:
    """The site behind a trusted proxy on 127.0.0.1 (tests speak from other addresses), writing its
    mail to files, with caps of 3 an address and 10 a site an hour and a digest every 6 s."""
    return Site(site_env(
        fake_llm_server, CHAT_TRUSTED_PROXIES="127.0.0.1/32", CHAT_HANDOFF_EMAILS="support@example.com",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(tmp_path / "mail"),
        CHAT_HANDOFF_EMAILS_PER_ADDRESS="3", CHAT_HANDOFF_EMAILS_PER_HOUR="10", CHAT_HANDOFF_DIGEST_MINUTES="0.1",
        CHAT_SITE_URL="https://chat.example.com", **env))


def ask_for_people(site, addresses: list[str]) -> list[int]:
    api = SiteClient(site)
    statuses = [api.request("POST", "/api/handoff", {}, {"X-Forwarded-For": address}).status
                for address in addresses]
    return statuses


def test_two_workers_share_the_caps_and_send_one_digest(postgres, own_redis, fake_llm_server, tmp_path):
    site = emailing_site(fake_llm_server, tmp_path, REDIS_URL=own_redis.url, WEB_CONCURRENCY="2")
    try:
        statuses = ask_for_people(site, ["203.0.113.5"] * 30 + [f"198.51.100.{n}" for n in range(10)])
        assert statuses == [200] * 40
        # 3 from the first address, then 7 of the others until the site's 10; 30 held back.
        messages = wait_for_mail(site, tmp_path / "mail",
                                 lambda messages: sum(len(held_for(body(d))) for d in digests(messages)) >= 30)
        time.sleep(7)  # a digest period more: a second worker's digest would have come by now
        messages = sent_mail(tmp_path / "mail")
    finally:
        site.stop()

    single = [m for m in messages if m not in digests(messages)]
    assert len(single) == 10
    held = [pk for digest in digests(messages) for pk in held_for(body(digest))]
    assert len(held) == len(set(held)) == 30  # each held one listed once: one digest per period
    emailed = {pk for m in single for pk in held_for(body(m))}
    assert set(held) | emailed == set(Conversation.objects.values_list("pk", flat=True))
    assert Conversation.objects.filter(handoff="waiting").count() == 40
    assert all("https://chat.example.com/admin/conversations/conversation/" in body(m) for m in messages)


def test_with_redis_down_each_worker_still_caps_and_the_handoff_works(postgres, own_redis, fake_llm_server,
                                                                     tmp_path):
    own_redis.stop()
    site = emailing_site(fake_llm_server, tmp_path, REDIS_URL=own_redis.url)
    try:
        statuses = ask_for_people(site, ["203.0.113.5"] * 10)
        messages = wait_for_mail(site, tmp_path / "mail", lambda messages: digests(messages))
    finally:
        site.stop()

    assert statuses == [200] * 10
    assert Conversation.objects.filter(handoff="waiting").count() == 10
    assert len(messages) == 4 and len(held_for(body(digests(messages)[0]))) == 7


def test_the_console_backend_prints_no_line_that_passes_for_a_log_record(postgres, fake_llm_server):
    site = Site(site_env(fake_llm_server, CHAT_HANDOFF_EMAILS="support@example.com"))
    try:
        assert SiteClient(site).chat(HOSTILE).ok()["handoff"] == "waiting"
        deadline = time.monotonic() + 30
        while "Subject: Conversation" not in site.log():
            assert time.monotonic() < deadline, site.log()[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)  # the rest of the email
        log = site.log()
    finally:
        site.stop()

    records = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        records.append(entry)
        assert isinstance(entry, dict) and entry.get("logger") != "forged", line
        assert entry["time"] and entry["level"] and entry["request_id"]
    assert any(entry["message"] == "request" for entry in records)
    assert f"> {FORGED_LOG}" in log.splitlines()
