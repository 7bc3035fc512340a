from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LoyaltyConfig(AppConfig):
    name = "shequn.loyalty"
    label = "loyalty"
    verbose_name = _("Loyalty")

    def ready(self) -> None:
        from shequn.core.services import WORKSPACE_INITIALIZERS
        from shequn.interactions.services import INTERACTION_HANDLERS
        from shequn.members.services import MERGE_HANDLERS, UNMERGE_HANDLERS

        from .services import install_defaults, merge_points, on_interactions, unmerge_points

        if install_defaults not in WORKSPACE_INITIALIZERS:
            WORKSPACE_INITIALIZERS.append(install_defaults)
        if on_interactions not in INTERACTION_HANDLERS:
            INTERACTION_HANDLERS.append(on_interactions)
        if merge_points not in MERGE_HANDLERS:
            MERGE_HANDLERS.append(merge_points)
        if unmerge_points not in UNMERGE_HANDLERS:
            UNMERGE_HANDLERS.append(unmerge_points)
