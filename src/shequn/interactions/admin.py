from django.contrib import admin

from shequn.core.cache import VersionedAdminMixin

from .models import Interaction, Touchpoint, TouchpointsVersion


@admin.register(Touchpoint)
class TouchpointAdmin(VersionedAdminMixin, admin.ModelAdmin):
    """Edits here change the workspace's touchpoints version too, so cached code maps are dropped."""

    version_model = TouchpointsVersion
    list_display = ("code", "name", "workspace", "channel", "function", "importance", "complexity")
    list_filter = ("workspace", "channel")


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    """Read-only: the interaction log is append-only."""

    list_display = ("id", "workspace", "member", "type", "channel", "direction", "occurred_at")
    list_filter = ("workspace", "type", "channel")
    raw_id_fields = ("member", "touchpoint")
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
