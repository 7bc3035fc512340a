from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EngagementConfig(AppConfig):
    name = "shequn.engagement"
    label = "engagement"
    verbose_name = _("Tiers, badges, tasks, check-in and leaderboards")

    def ready(self) -> None:
        from shequn.core import hooks
        from shequn.core.services import WORKSPACE_INITIALIZERS
        from shequn.interactions.services import INTERACTION_HANDLERS
        from shequn.loyalty.services import EARN_MULTIPLIERS

        from . import tasks  # noqa: F401 - registers the periodic review
        from .services import (
            install_defaults,
            on_interactions,
            on_points_changed,
            plan_points_changed,
            tier_multiplier,
        )

        if install_defaults not in WORKSPACE_INITIALIZERS:
            WORKSPACE_INITIALIZERS.append(install_defaults)
        if on_interactions not in INTERACTION_HANDLERS:
            INTERACTION_HANDLERS.append(on_interactions)
        if tier_multiplier not in EARN_MULTIPLIERS:
            EARN_MULTIPLIERS.append(tier_multiplier)
        hooks.on(hooks.POINTS_CHANGED, on_points_changed, plan=plan_points_changed)
