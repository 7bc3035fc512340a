from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChannelsConfig(AppConfig):
    name = "shequn.channels"
    label = "channels"
    verbose_name = _("Channels")

    def ready(self) -> None:
        from shequn.interactions.services import INTERACTION_HANDLERS

        from .code_services import on_interactions

        if on_interactions not in INTERACTION_HANDLERS:
            INTERACTION_HANDLERS.append(on_interactions)
