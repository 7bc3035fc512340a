from django.contrib import admin

from shequn.core.cache import VersionedAdminMixin

from .models import LifecycleVersion, Stage, StageChange, StageRule


class _VersionedAdmin(VersionedAdminMixin, admin.ModelAdmin):
    """Edits here change the workspace's lifecycle version too, so cached copies are dropped."""

    version_model = LifecycleVersion


@admin.register(Stage)
class StageAdmin(_VersionedAdmin):
    list_display = ("name", "key", "position", "workspace")
    list_filter = ("workspace",)


@admin.register(StageRule)
class StageRuleAdmin(_VersionedAdmin):
    list_display = ("name", "interaction_type", "min_count", "target_stage", "priority", "enabled", "workspace")
    list_filter = ("workspace",)


@admin.register(StageChange)
class StageChangeAdmin(admin.ModelAdmin):
    list_display = ("at", "member", "from_stage", "to_stage", "cause")
    raw_id_fields = ("member",)
