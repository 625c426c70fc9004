"""The count of waiting conversations on the admin index (templates/admin/index.html)."""

from django import template

from conversations.models import Conversation

register = template.Library()


@register.simple_tag(takes_context=True)
def waiting_for_a_person(context) -> int | None:
    """How many customers wait for a person's answer; None for staff who may not read conversations."""
    if not context["request"].user.has_perm("conversations.view_conversation"):
        return None
    return Conversation.objects.waiting().count()
