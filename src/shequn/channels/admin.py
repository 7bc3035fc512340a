from django.contrib import admin

from .models import ChannelCode, InboundMessage, WeChatAccount


@admin.register(WeChatAccount)
class WeChatAccountAdmin(admin.ModelAdmin):
    """Read-only, and without the secrets: accounts are connected with ``shequn wechat connect``
    (``connect_account``), which validates every field."""

    list_display = ("app_id", "workspace", "mode", "created_at")
    list_filter = ("workspace", "mode")
    fields = ("workspace", "app_id", "mode", "endpoint_key", "welcome_text", "reply_text", "timestamp_tolerance",
              "created_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    """Read-only: the record of what WeChat pushed and what was answered."""

    list_display = ("id", "workspace", "account", "msg_type", "event", "from_user", "reply_type", "received_at",
                    "recorded_at", "record_error")
    list_filter = ("workspace", "msg_type")
    raw_id_fields = ("account", "interaction")
    show_full_result_count = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ChannelCode)
class ChannelCodeAdmin(admin.ModelAdmin):
    """Read-only: codes are created in the console or the API (``code_services``), which asks WeChat for
    the QR code and keeps the fast path's cache in step."""

    list_display = ("name", "scene", "kind", "account", "workspace", "active", "created_at")
    list_filter = ("workspace", "kind", "active")
    search_fields = ("name", "scene")
    raw_id_fields = ("account",)

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # deactivate instead: a printed code keeps being scanned
