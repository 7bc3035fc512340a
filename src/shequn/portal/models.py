"""The member portal's own table: one-time sign-in codes."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class LoginCode(models.Model):
    """A one-time code sent to a member to sign in to the portal.

    Only a keyed hash of the code is stored. ``window`` is the minute (epoch // 60) the code was asked
    for: the unique constraint on (workspace, member, window) makes "one code per member per minute" a
    database rule rather than a check-then-act."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    code_hash = models.CharField(max_length=64)
    window = models.BigIntegerField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("portal sign-in code")
        constraints = [
            models.UniqueConstraint(fields=["workspace", "member", "window"], name="portal_code_one_per_minute"),
        ]
        indexes = [models.Index(fields=["workspace", "member", "-created_at"], name="portal_code_member")]
