from django.contrib import admin

from .models import AttributeDefinition, Identity, ImportJob, Keyword, Member, MergeRecord, Tag


class IdentityInline(admin.TabularInline):
    model = Identity
    extra = 0
    fields = ("kind", "namespace", "value", "verified")


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ("id", "display_name", "workspace", "status", "stage", "strength", "last_interaction_at")
    list_filter = ("workspace", "status", "strength")
    search_fields = ("display_name", "identities__value")
    raw_id_fields = ("merged_into", "referrer")
    readonly_fields = ("interaction_count", "inbound_count", "outbound_count", "purchase_count", "purchase_total",
                       "first_interaction_at", "last_interaction_at", "activity_score", "activity_at", "stage",
                       "stage_changed_at", "strength")
    inlines = [IdentityInline]
    show_full_result_count = False


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ("name", "workspace")
    list_filter = ("workspace",)


@admin.register(Keyword)
class KeywordAdmin(admin.ModelAdmin):
    list_display = ("path", "workspace", "depth")
    list_filter = ("workspace",)


@admin.register(AttributeDefinition)
class AttributeDefinitionAdmin(admin.ModelAdmin):
    list_display = ("key", "label", "type", "workspace")


@admin.register(MergeRecord)
class MergeRecordAdmin(admin.ModelAdmin):
    list_display = ("at", "survivor", "absorbed", "reason", "actor", "undone_at")
    raw_id_fields = ("survivor", "absorbed")


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("created_at", "workspace", "kind", "filename", "status", "processed_rows", "error_count")
