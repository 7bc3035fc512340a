"""Members, their identities, profile, tags and keywords, consent, merges and imports."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class Gender(models.TextChoices):
    UNKNOWN = "", _("Unknown")
    FEMALE = "female", _("Female")
    MALE = "male", _("Male")
    OTHER = "other", _("Other")


class Strength(models.IntegerChoices):
    """关系强度 — computed by ``shequn.lifecycle.strength`` (formula in docs/lifecycle.md)."""

    NONE = 0, _("无关系 none")
    POTENTIAL = 1, _("潜在 potential")
    WEAK = 2, _("弱 weak")
    STRONG = 3, _("强 strong")
    LONG = 4, _("长 long")
    FERVENT = 5, _("亢 fervent")


class MemberStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    MERGED = "merged", _("Merged into another member")


class Member(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="members")
    status = models.CharField(max_length=8, choices=MemberStatus.choices, default=MemberStatus.ACTIVE)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="absorbed")

    display_name = models.CharField(max_length=200, blank=True)
    gender = models.CharField(max_length=8, choices=Gender.choices, blank=True, default="")
    birthday = models.DateField(null=True, blank=True)
    city = models.CharField(max_length=100, blank=True)
    timezone = models.CharField(max_length=64, blank=True, help_text="IANA name; empty = the workspace's")
    language = models.CharField(max_length=16, blank=True)
    attributes = models.JSONField(default=dict, blank=True)

    # Acquisition: the first source wins; later sources are touches (interactions).
    source_channel = models.CharField(max_length=64, blank=True)
    source_code = models.CharField(max_length=128, blank=True, help_text="channel code / QR / poster id")
    referrer = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="referred")

    # Denormalised by the lifecycle domain so that member lists filter on indexed columns.
    stage = models.ForeignKey("lifecycle.Stage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    strength = models.PositiveSmallIntegerField(choices=Strength.choices, default=Strength.NONE)

    # Engagement counters, changed only with F() expressions by the interaction write path.
    interaction_count = models.PositiveIntegerField(default=0)
    inbound_count = models.PositiveIntegerField(default=0)
    outbound_count = models.PositiveIntegerField(default=0)
    purchase_count = models.PositiveIntegerField(default=0)
    purchase_total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    first_interaction_at = models.DateTimeField(null=True, blank=True)
    last_interaction_at = models.DateTimeField(null=True, blank=True)
    activity_score = models.FloatField(default=0.0, help_text="interactions, decayed with a 30-day half-life")
    activity_at = models.DateTimeField(null=True, blank=True, help_text="time activity_score refers to")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "status", "-id"], name="member_ws_status_id"),
            models.Index(fields=["workspace", "stage", "-id"], name="member_ws_stage_id"),
            models.Index(fields=["workspace", "strength", "-id"], name="member_ws_strength_id"),
            models.Index(fields=["workspace", "source_channel", "-id"], name="member_ws_source_id"),
            models.Index(fields=["workspace", "display_name"], name="member_ws_name"),
            models.Index(fields=["workspace", "last_interaction_at"], name="member_ws_last_at"),
        ]

    def __str__(self) -> str:
        return self.display_name or f"#{self.pk}"


class IdentityKind(models.TextChoices):
    WECHAT_OPENID = "wechat_openid", _("WeChat openid")
    WECHAT_UNIONID = "wechat_unionid", _("WeChat unionid")
    PHONE = "phone", _("Phone")
    EMAIL = "email", _("Email")
    EXTERNAL = "external", _("External id")


class Identity(models.Model):
    """One way to recognise a member. ``namespace`` is the WeChat AppID for an openid and the
    system name for an external id; empty otherwise. Unique per workspace."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(max_length=16, choices=IdentityKind.choices)
    namespace = models.CharField(max_length=64, blank=True, default="")
    value = models.CharField(max_length=255)
    verified = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "kind", "namespace", "value"], name="uniq_identity"),
        ]
        indexes = [models.Index(fields=["workspace", "value"], name="identity_ws_value")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.namespace + ':' if self.namespace else ''}{self.value}"


class Tag(models.Model):
    """A flat tag (标签)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_tag_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MemberTag(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="member_tags")
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="member_tags")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "tag"], name="uniq_member_tag")]
        indexes = [models.Index(fields=["workspace", "tag", "-member"], name="membertag_ws_tag_member")]


class Keyword(models.Model):
    """A node of the hierarchical keyword index (一级关键词 / 二级关键词 …)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="keywords")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    name = models.CharField(max_length=64)
    path = models.CharField(max_length=512, help_text="names from the root joined by '/'")
    depth = models.PositiveSmallIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "path"], name="uniq_keyword_path")]
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class MemberKeyword(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="member_keywords")
    keyword = models.ForeignKey(Keyword, on_delete=models.CASCADE, related_name="member_keywords")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "keyword"], name="uniq_member_keyword")]
        indexes = [models.Index(fields=["workspace", "keyword", "-member"], name="memberkw_ws_kw_member")]


class AttributeType(models.TextChoices):
    TEXT = "text", _("Text")
    NUMBER = "number", _("Number")
    BOOLEAN = "boolean", _("Yes/no")
    DATE = "date", _("Date")
    CHOICE = "choice", _("Choice")


class AttributeDefinition(models.Model):
    """A custom member attribute, typed per workspace. Values live in ``Member.attributes``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="attribute_definitions")
    key = models.SlugField(max_length=64)
    label = models.CharField(max_length=100)
    type = models.CharField(max_length=8, choices=AttributeType.choices)
    choices = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="uniq_attribute_key")]
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class SubscriptionScope(models.TextChoices):
    CATEGORY = "category", _("Category")
    TAG = "tag", _("Tag")


class Subscription(models.Model):
    """Consent: whether a member accepts messages of a category (e.g. ``marketing``) or about a tag."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="subscriptions")
    scope = models.CharField(max_length=8, choices=SubscriptionScope.choices)
    key = models.CharField(max_length=64)
    subscribed = models.BooleanField()
    source = models.CharField(max_length=64, blank=True)
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "scope", "key"], name="uniq_subscription")]


class MergeRecord(models.Model):
    """The audit of one merge, holding exactly what moved so that the merge can be undone."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    survivor = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="merges_received")
    absorbed = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="merges_given")
    reason = models.CharField(max_length=255)
    actor = models.CharField(max_length=200)
    at = models.DateTimeField(auto_now_add=True)
    moved_member_ids = models.JSONField(default=list, help_text="absorbed member and those it had absorbed")
    moved_identity_ids = models.JSONField(default=list)
    added_tag_ids = models.JSONField(default=list)
    added_keyword_ids = models.JSONField(default=list)
    filled_fields = models.JSONField(default=dict, help_text="survivor fields filled from the absorbed member")
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at"]


class ImportKind(models.TextChoices):
    MEMBERS = "members", _("Members")
    INTERACTIONS = "interactions", _("Interactions")


class ImportStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class ImportJob(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=ImportKind.choices)
    filename = models.CharField(max_length=255)
    file_path = models.CharField(max_length=500)
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=8, choices=ImportStatus.choices, default=ImportStatus.QUEUED)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{row, field, reason}], first 1,000")
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
