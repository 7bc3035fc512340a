from django.contrib.auth import views as auth_views
from django.urls import include, path

from .views import (
                    bots,
                    channels,
                    dashboard,
                    engagement,
                    home,
                    imports,
                    inbox,
                    lifecycle,
                    loyalty,
                    members,
                    offers,
                    outbound,
                    settings,
                    touchpoints,
)

app_name = "console"

workspace_patterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("funnel/", dashboard.funnel, name="funnel"),
    path("members/", members.member_list, name="members"),
    path("members/<int:member_id>/", members.member_detail, name="member"),
    path("members/<int:member_id>/tags/add/", members.tag_add, name="member_tag_add"),
    path("members/<int:member_id>/tags/remove/", members.tag_remove, name="member_tag_remove"),
    path("members/<int:member_id>/stage/", members.stage_change, name="member_stage"),
    path("members/<int:member_id>/merge/", members.merge, name="member_merge"),
    path("members/<int:member_id>/merges/<int:record_id>/undo/", members.unmerge, name="member_unmerge"),
    path("touchpoints/", touchpoints.touchpoints, name="touchpoints"),
    path("lifecycle/rules/", lifecycle.rule_list, name="rules"),
    path("lifecycle/rules/new/", lifecycle.rule_new, name="rule_new"),
    path("lifecycle/rules/<int:rule_id>/", lifecycle.rule_edit, name="rule_edit"),
    path("lifecycle/rules/<int:rule_id>/delete/", lifecycle.rule_delete, name="rule_delete"),
    path("imports/", imports.import_list, name="imports"),
    path("imports/<int:job_id>/", imports.import_job, name="import_job"),
    path("imports/<int:job_id>/status/", imports.import_status, name="import_status"),
    path("imports/export/<slug:kind>.csv", imports.export, name="export"),
    path("settings/api-keys/", settings.api_keys, name="api_keys"),
    path("settings/api-keys/<int:key_id>/revoke/", settings.api_key_revoke, name="api_key_revoke"),
    *loyalty.urlpatterns,
    *engagement.urlpatterns,
    *offers.urlpatterns,
    *channels.urlpatterns,
    *bots.urlpatterns,
    *inbox.urlpatterns,
    *outbound.urlpatterns,
]

urlpatterns = [
    path("", home.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="console:login"), name="logout"),
    path("w/<slug:slug>/", include(workspace_patterns)),
]
