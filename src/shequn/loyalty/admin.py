"""Read-only admin views of the loyalty tables: every change goes through ``services``."""

from __future__ import annotations

from django.contrib import admin

from .models import EarnCapUsage, EarnRule, PointBalance, PointEntry, PointLot, PointLotDraw, PointType


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(PointType)
class PointTypeAdmin(ReadOnlyAdmin):
    list_display = ("code", "name", "kind", "expiry_policy", "expiry_period", "pending_days", "transferable", "workspace")
    list_filter = ("workspace", "kind")


@admin.register(EarnRule)
class EarnRuleAdmin(ReadOnlyAdmin):
    list_display = ("name", "point_type", "interaction_type", "points", "points_per_yuan", "priority", "enabled",
                    "workspace")
    list_filter = ("workspace", "enabled")


@admin.register(PointBalance)
class PointBalanceAdmin(ReadOnlyAdmin):
    list_display = ("member", "point_type", "available", "pending", "lifetime_earned", "next_change_at")
    list_filter = ("workspace",)
    raw_id_fields = ("member",)
    show_full_result_count = False


@admin.register(PointEntry)
class PointEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "at", "member", "point_type", "kind", "amount", "shortfall", "reason", "actor")
    list_filter = ("workspace", "kind")
    raw_id_fields = ("member", "related")
    show_full_result_count = False


@admin.register(PointLot)
class PointLotAdmin(ReadOnlyAdmin):
    list_display = ("id", "member", "point_type", "amount", "remaining", "available_at", "released", "expires_at")
    list_filter = ("workspace", "released")
    raw_id_fields = ("member", "entry")
    show_full_result_count = False


@admin.register(PointLotDraw)
class PointLotDrawAdmin(ReadOnlyAdmin):
    list_display = ("id", "entry", "lot", "amount")
    raw_id_fields = ("entry", "lot")
    show_full_result_count = False


@admin.register(EarnCapUsage)
class EarnCapUsageAdmin(ReadOnlyAdmin):
    list_display = ("rule", "member", "period", "period_start", "points")
    raw_id_fields = ("member",)
