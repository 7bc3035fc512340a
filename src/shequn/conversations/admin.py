from django.contrib import admin

from .models import AutoReplyRule, Incident, Menu


@admin.register(AutoReplyRule)
class AutoReplyRuleAdmin(admin.ModelAdmin):
    """Read-only: rules are written through ``services`` (validated, audited, and bumping the rule
    set's version so every process recompiles it)."""

    list_display = ("name", "workspace", "match_type", "priority", "enabled", "updated_at")
    list_filter = ("workspace", "match_type", "enabled")
    search_fields = ("name",)
    show_full_result_count = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class _ReadOnly(admin.ModelAdmin):
    """Menus and incidents are written through ``services`` (validated, audited, versioned)."""

    show_full_result_count = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Menu)
class MenuAdmin(_ReadOnly):
    list_display = ("name", "workspace", "enabled", "timeout_seconds", "updated_at")
    list_filter = ("workspace", "enabled")


@admin.register(Incident)
class IncidentAdmin(_ReadOnly):
    list_display = ("title", "workspace", "status", "starts_at", "ends_at", "ended_at")
    list_filter = ("workspace", "status")
