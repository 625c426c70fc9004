from django.urls import path, re_path

from . import views

urlpatterns = [
    path("api/chat", views.chat, name="chat"),
    path("api/history", views.history, name="history"),
    path("api/handoff", views.handoff_request, name="handoff"),
    path("api/handoff/email", views.handoff_email, name="handoff-email"),
    path("api/updates", views.updates_poll, name="updates"),
    re_path(r"^api/", views.api_not_found),
]
