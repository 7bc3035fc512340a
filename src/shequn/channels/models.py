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
    codes_version = models.CharField(
        max_length=32, blank=True, default="",
        help_text="random; changes whenever one of the account's channel codes changes (invalidates cached lookups)")
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
    member sees the same answer and the interaction is recorded once (ADR 0005).

    The row is written on the fast path with the reply, and is itself the recording's queue entry: a
    worker's ``channels.record_inbound`` drain records it as an interaction afterwards, from
    ``payload`` (the message as parsed) and ``reply_meta`` (what answered it), finding it through the
    ``wx_inbound_unrecorded`` partial index. ``recorded_at`` is set when that is done; one whose event
    the interaction log refuses keeps the reason in ``record_error`` and is not retried."""

    # Every index is written by each message on the endpoint's answer path, so none is kept twice: the
    # workspace's and the account's own foreign-key indexes are the leading columns of the indexes
    # below, and the interaction's is partial (the link is set when the message is recorded, later).
    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    account = models.ForeignKey(WeChatAccount, on_delete=models.CASCADE, related_name="inbound_messages",
                                db_index=False)
    dedup_key = models.CharField(max_length=128)
    msg_type = models.CharField(max_length=32)
    event = models.CharField(max_length=32, blank=True)
    from_user = models.CharField(max_length=64, help_text="the member's openid")
    to_user = models.CharField(max_length=64, help_text="the account's original id (gh_…)")
    interaction = models.ForeignKey("interactions.Interaction", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", db_index=False)
    reply_type = models.CharField(max_length=16, blank=True, help_text="empty: answered 'success' (no reply)")
    reply_content = models.TextField(blank=True)
    reply_meta = models.JSONField(default=dict, blank=True,
                                  help_text="what answered: auto_reply_rule, bot_outcome and the bot's properties")
    payload = models.JSONField(default=dict, blank=True, help_text="the message as parsed, for recording it")
    received_at = models.DateTimeField(auto_now_add=True)
    recorded_at = models.DateTimeField(null=True, blank=True, help_text="when the interaction was recorded")
    record_error = models.TextField(blank=True, help_text="why the interaction log refused the message, if it did")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "dedup_key"], name="uniq_wechat_inbound_key")]
        indexes = [
            models.Index(fields=["workspace", "-received_at"], name="wx_inbound_ws_time"),
            # The sweep's question: which messages are still to be recorded (a handful, normally none).
            models.Index(fields=["received_at"], name="wx_inbound_unrecorded",
                         condition=models.Q(recorded_at__isnull=True, record_error="")),
            # An interaction's deletion sets its messages' link to NULL: found here.
            models.Index(fields=["interaction"], name="wx_inbound_interaction",
                         condition=models.Q(interaction__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.msg_type}/{self.event or '-'} {self.dedup_key}"


# ---------------------------------------------------------------------------------------------
# channel QR codes (渠道活码)


class CodeKind(models.TextChoices):
    """Where a channel code is put up."""

    POSTER = "poster", _("Poster")
    STORE = "store", _("Store")
    CLERK = "clerk", _("Clerk")
    EVENT = "event", _("Event")
    CAMPAIGN = "campaign", _("Campaign")


DEMO_TICKET_PREFIX = "demo-only:"


class ChannelCode(models.Model):
    """A permanent parametric QR code of an Official Account (渠道活码), one per source.

    ``scene`` is the string WeChat puts in the ``EventKey`` of a scan (``qrscene_<scene>`` on a
    subscribe, ``<scene>`` on a SCAN); it is unique per account and never changes, because the printed
    code carries it. ``ticket`` and ``url`` are what WeChat returned for it (``url`` is the content the
    QR image encodes). A ticket starting with ``demo-only:`` was made up by the demo data and is not
    known to WeChat (docs/channel-codes.md)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(WeChatAccount, on_delete=models.CASCADE, related_name="codes")
    kind = models.CharField(max_length=16, choices=CodeKind.choices)
    name = models.CharField(max_length=100)
    scene = models.CharField(max_length=64)
    welcome_text = models.TextField(blank=True, help_text="passive reply to a new follower who scanned this code")
    tags = models.JSONField(default=list, blank=True, help_text="tag names given to a new follower")
    ticket = models.CharField(max_length=255)
    url = models.CharField(max_length=255)
    active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "scene"], name="uniq_channel_code_scene")]
        indexes = [models.Index(fields=["workspace", "-id"], name="chcode_ws_id")]

    def __str__(self) -> str:
        return f"{self.name} ({self.scene})"

    @property
    def is_demo(self) -> bool:
        return self.ticket.startswith(DEMO_TICKET_PREFIX)


class ChannelCodeMember(models.Model):
    """What one member did with one code: the facts its stats are made of (ADR 0012).

    ``followed_at``: the member's first follow through this code. ``unfollowed_at``: an unfollow within
    seven days of that follow. ``converted_at``: the member's first purchase after the first scan,
    counted only for a member who had not bought before (``customer_before``). Each is set once, by a
    conditional UPDATE, and counted in ``ChannelCodeDay`` by the same statement's row count."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    code = models.ForeignKey(ChannelCode, on_delete=models.CASCADE, related_name="members")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    first_scan_at = models.DateTimeField()
    last_scan_at = models.DateTimeField()
    scans = models.PositiveIntegerField(default=0)
    customer_before = models.BooleanField(default=False)
    followed_at = models.DateTimeField(null=True, blank=True)
    unfollowed_at = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "code"], name="uniq_channel_code_member")]
        indexes = [models.Index(fields=["code", "-first_scan_at"], name="chcode_member_code_time")]


class ChannelCodeDay(models.Model):
    """Daily counters of one code (the workspace's calendar day), changed only with F() as scans,
    unfollows and purchases arrive — never rebuilt."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    code = models.ForeignKey(ChannelCode, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    scans = models.PositiveIntegerField(default=0)
    scanners = models.PositiveIntegerField(default=0, help_text="members scanning this code for the first time")
    follows = models.PositiveIntegerField(default=0)
    unfollows = models.PositiveIntegerField(default=0, help_text="unfollows within 7 days of a follow by this code")
    conversions = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["code", "day"], name="uniq_channel_code_day")]
        indexes = [models.Index(fields=["workspace", "day"], name="chcode_day_ws_day")]
