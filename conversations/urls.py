from django.urls import path, re_path

from . import views

urlpatterns = [
    path("api/chat", views.chat, name="chat"),
    path("api/history", views.history, name="history"),
    path("api/handoff", views.handoff_request, name="handoff"),
    path("api/handoff/email", views.handoff_email, name="handoff-email"),
    path("api/updates", views.updates_poll, name="updates"),
    path("api/devices", views.device_list, name="devices"),
    path("api/devices/link", views.device_link, name="device_link"),
    path("api/devices/join", views.device_join, name="device_join"),
    path("api/devices/end", views.device_end, name="device_end"),
    re_path(r"^api/", views.api_not_found),
]
