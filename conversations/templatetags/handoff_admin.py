"""The count of waiting conversations on the admin index (templates/admin/index.html), and the URL of
the project's JavaScript catalog that the staff pages' scripts read (templates/admin/base_site.html)."""

from django import template
from django.urls import reverse

from conversations import languages
from conversations.models import Conversation

register = template.Library()


@register.simple_tag(takes_context=True)
def waiting_for_a_person(context) -> int | None:
    """How many customers wait for a person's answer; None for staff who may not read conversations."""
    if not context["request"].user.has_perm("conversations.view_conversation"):
        return None
    return Conversation.objects.waiting().count()


@register.simple_tag
def js_catalog_url() -> str:
    """The djangojs catalog in the admin's active language (the staff member's), under the same versioned
    URL the chat page loads (views.js_catalog): static/admin-chat/*.js call its gettext()."""
    from conversations.views import catalog_version  # views imports much of the app: only when a page renders

    return reverse("js-catalog", kwargs={"version": catalog_version(), "lang": languages.current()})
