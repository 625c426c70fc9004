"""Staff and the devices of a conversation (admin.ConversationAdmin): how many browsers it is open
in, and "End all devices" for a customer who reports a lost phone."""

import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client

from conversations import devices, sessions
from conversations.models import Conversation, DeviceLink, Session

from . import data

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/conversations/conversation/"


def second_device(conversation: Conversation) -> uuid.UUID:
    return Session.objects.create(session_id=uuid.uuid4(), conversation=conversation).session_id


def test_the_list_and_the_page_show_how_many_devices_a_conversation_has(admin_client):
    two, one = data.conversations(2)
    second_device(two)

    listed = admin_client.get(CHANGELIST).content.decode()
    page = admin_client.get(f"{CHANGELIST}{two.pk}/change/").content.decode()

    assert '<td class="field-devices_open">2</td>' in listed and '<td class="field-devices_open">1</td>' in listed
    assert "field-devices_open" in page


def test_staff_end_all_devices_of_a_conversation_and_it_stays(admin_client):
    lost, kept = data.conversations(2)
    other = second_device(lost)
    for session_id in (lost.session_id, other):
        sessions.remember(session_id, lost.pk, lost.last_activity_at)
    devices.email_link(lost.pk)  # unused, in the lost phone's mail
    devices.email_link(kept.pk)

    response = admin_client.post(CHANGELIST, {"action": "end_devices", "_selected_action": [lost.pk]})

    assert response.status_code == 302
    assert not Session.objects.filter(conversation=lost).exists()
    assert Session.objects.filter(conversation=kept).count() == 1
    assert list(DeviceLink.objects.values_list("conversation", flat=True)) == [kept.pk]
    assert Conversation.objects.filter(pk=lost.pk).exists()  # for staff, until it is purged
    assert sessions.cached_conversation_id(lost.session_id) is None and sessions.cached_conversation_id(other) is None
    entry = LogEntry.objects.get(object_id=str(lost.pk))
    assert "Ended all devices" in entry.get_change_message()


def test_ending_devices_needs_the_delete_permission(client: Client):
    conversation = data.conversation()
    user = User.objects.create_user("viewer", password="a-long-test-password", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client.force_login(user)

    client.post(CHANGELIST, {"action": "end_devices", "_selected_action": [conversation.pk]})

    assert Session.objects.filter(conversation=conversation).exists()


def test_staff_find_a_conversation_by_the_reference_any_of_its_devices_shows(admin_client):
    conversation = data.conversation()
    other = second_device(conversation)

    assert Conversation.objects.for_session(str(other)[:8]) == conversation
    assert Conversation.objects.for_session(str(conversation.session_id)[:8]) == conversation
