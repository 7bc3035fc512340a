"""What the workspace's purchase history says about items, refreshed periodically
(``recommend.refresh_affinity``) so that ranking a member's offers is a few indexed reads."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class ItemStat(models.Model):
    """One purchased item (by name, as in purchase ``properties.items[].name``) of a workspace."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    item = models.CharField(_("item"), max_length=200)
    buyers = models.PositiveIntegerField(_("buyers"), default=0)
    popularity = models.FloatField(_("popularity"), default=0.0, help_text=_("Share of buying members"))
    repeat_rate = models.FloatField(_("repeat rate"), default=0.0,
                                    help_text=_("Smoothed share of buyers who bought it again"))
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("item statistic")
        verbose_name_plural = _("item statistics")
        constraints = [models.UniqueConstraint(fields=["workspace", "item"], name="uq_recommend_item_stat")]
        indexes = [models.Index(fields=["workspace", "-popularity"], name="ix_recommend_popular")]

    def __str__(self) -> str:
        return self.item


class ItemAffinity(models.Model):
    """``other`` is among the items most often bought by the members who buy ``item`` (cosine)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    item = models.CharField(_("item"), max_length=200)
    other = models.CharField(_("similar item"), max_length=200)
    similarity = models.FloatField(_("similarity"))
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("item affinity")
        verbose_name_plural = _("item affinities")
        constraints = [
            models.UniqueConstraint(fields=["workspace", "item", "other"], name="uq_recommend_affinity"),
            models.CheckConstraint(condition=models.Q(similarity__gte=0) & models.Q(similarity__lte=1),
                                   name="ck_recommend_similarity_range"),
        ]

    def __str__(self) -> str:
        return f"{self.item} → {self.other}"
