from django.contrib import admin

from .models import Stage, StageChange, StageRule


@admin.register(Stage)
class StageAdmin(admin.ModelAdmin):
    list_display = ("name", "key", "position", "workspace")
    list_filter = ("workspace",)


@admin.register(StageRule)
class StageRuleAdmin(admin.ModelAdmin):
    list_display = ("name", "interaction_type", "min_count", "target_stage", "priority", "enabled", "workspace")
    list_filter = ("workspace",)


@admin.register(StageChange)
class StageChangeAdmin(admin.ModelAdmin):
    list_display = ("at", "member", "from_stage", "to_stage", "cause")
    raw_id_fields = ("member",)
