from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EngagementConfig(AppConfig):
    name = "shequn.engagement"
    label = "engagement"
    verbose_name = _("Tiers, badges, tasks, check-in and leaderboards")
