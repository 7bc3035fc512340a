"""Channels: the WeChat Official Accounts connected to a workspace and the messages they received."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace

from .wechat import Credentials


class WeChatMode(models.TextChoices):
    """The message encryption mode chosen in the Official Account's console (消息加解密方式)."""

    PLAINTEXT = "plaintext", _("Plaintext (明文模式)")
    COMPATIBLE = "compatible", _("Compatible (兼容模式)")
    SAFE = "safe", _("Safe (安全模式)")


class WeChatAccount(models.Model):
    """A WeChat Official Account (公众号) connected to a workspace.

    ``app_secret``, ``token`` and ``encoding_aes_key`` are secrets: whoever reads them can sign and
    decrypt messages of the account (see docs/wechat.md). ``endpoint_key`` is the unguessable part of
    the server URL that WeChat calls: ``/wechat/<endpoint_key>/``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="wechat_accounts")
    app_id = models.CharField(max_length=32)
    app_secret = models.CharField(max_length=64)
    token = models.CharField(max_length=32)
    encoding_aes_key = models.CharField(max_length=43, blank=True)
    mode = models.CharField(max_length=10, choices=WeChatMode.choices, default=WeChatMode.SAFE)
    endpoint_key = models.CharField(max_length=64, unique=True)
    welcome_text = models.TextField(blank=True, help_text="passive reply to a new follower (subscribe)")
    reply_text = models.TextField(blank=True, help_text="default passive reply to any message")
    timestamp_tolerance = models.PositiveIntegerField(
        default=0, help_text="refuse requests whose timestamp is further than this many seconds from now; 0 = off")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "app_id"], name="uniq_wechat_app_per_workspace")]
        ordering = ["app_id"]

    def __str__(self) -> str:
        return self.app_id

    @property
    def source(self) -> str:
        """The interaction ``source`` of everything this account receives."""
        return f"wechat:{self.app_id}"

    def credentials(self) -> Credentials:
        return Credentials(app_id=self.app_id, token=self.token, encoding_aes_key=self.encoding_aes_key,
                           mode=self.mode, timestamp_tolerance=self.timestamp_tolerance)


class InboundMessage(models.Model):
    """One message or event WeChat pushed, processed once.

    ``(account, dedup_key)`` is unique: WeChat's retries of a message (same MsgId, or same
    FromUserName + CreateTime for an event) find this row and get the reply stored here, so the
    member sees the same answer and the interaction is recorded once (ADR 0005)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(WeChatAccount, on_delete=models.CASCADE, related_name="inbound_messages")
    dedup_key = models.CharField(max_length=128)
    msg_type = models.CharField(max_length=32)
    event = models.CharField(max_length=32, blank=True)
    from_user = models.CharField(max_length=64, help_text="the member's openid")
    to_user = models.CharField(max_length=64, help_text="the account's original id (gh_…)")
    interaction = models.ForeignKey("interactions.Interaction", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reply_type = models.CharField(max_length=16, blank=True, help_text="empty: answered 'success' (no reply)")
    reply_content = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "dedup_key"], name="uniq_wechat_inbound_key")]
        indexes = [models.Index(fields=["workspace", "-received_at"], name="wx_inbound_ws_time")]

    def __str__(self) -> str:
        return f"{self.msg_type}/{self.event or '-'} {self.dedup_key}"
