from django.contrib import admin
from django.urls import include, path

from conversations import views

urlpatterns = [
    path("", views.index, name="index"),
    path("embed", views.embed, name="embed"),
    path("jsi18n/<str:version>/<str:lang>.js", views.js_catalog, name="js-catalog"),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("livez", views.livez, name="livez"),
    path("metrics", views.metrics_scrape, name="metrics"),
    path("", include("conversations.urls")),
]

handler400 = "conversations.api.bad_request"
handler500 = "conversations.api.server_error"
