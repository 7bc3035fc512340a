from django.urls import re_path

from . import views

app_name = "wechat"

urlpatterns = [
    re_path(r"^(?P<endpoint_key>[A-Za-z0-9_-]{16,64})/$", views.endpoint, name="endpoint"),
]
