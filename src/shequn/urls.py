from django.contrib import admin
from django.urls import include, path

from shequn.api.root import api

urlpatterns = [
    path("wechat/", include("shequn.channels.urls")),  # first: WeChat waits on every answer (5 s rule)
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("hooks/", include("shequn.outbound.urls")),
    path("m/", include("shequn.portal.urls")),
    path("", include("shequn.console.urls")),
]
