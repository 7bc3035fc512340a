from django.contrib import admin

from .models import Interaction, Touchpoint


@admin.register(Touchpoint)
class TouchpointAdmin(admin.ModelAdmin):
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
