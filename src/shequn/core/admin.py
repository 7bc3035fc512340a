from django.contrib import admin

from .models import ApiKey, AuditEntry, PeriodicSchedule, StaffMembership, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "default_timezone", "created_at")
    search_fields = ("slug", "name")


@admin.register(StaffMembership)
class StaffMembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "workspace", "role")
    list_filter = ("role", "workspace")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "workspace", "role", "last_used_at", "revoked_at")
    list_filter = ("workspace",)
    readonly_fields = ("prefix", "key_hash", "last_used_at", "created_at")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "workspace", "actor", "action", "object_type", "object_id")
    list_filter = ("workspace", "action")

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(PeriodicSchedule)
class PeriodicScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "task_path", "interval_seconds", "next_run_at", "last_run_at", "enabled")
