from __future__ import annotations

from django.urls import URLPattern, re_path

from . import views

app_name = "outbound"

urlpatterns: list[URLPattern] = [
    re_path(r"^in/(?P<key>[A-Za-z0-9_-]{16,64})/$", views.inbound, name="inbound"),
]
