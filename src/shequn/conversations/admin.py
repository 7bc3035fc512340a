from django.contrib import admin

from .models import AutoReplyRule


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
