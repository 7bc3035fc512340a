from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OutboundConfig(AppConfig):
    name = "shequn.outbound"
    label = "outbound"
    verbose_name = _("Outbound messages and webhooks")

    def ready(self) -> None:
        from shequn.core import cache
        from shequn.interactions.services import INTERACTION_HANDLERS

        from .models import SubscriptionsVersion
        from .queries import SUBSCRIPTIONS_SOURCE
        from .services import on_interactions

        cache.register(SUBSCRIPTIONS_SOURCE, SubscriptionsVersion)

        if on_interactions not in INTERACTION_HANDLERS:
            INTERACTION_HANDLERS.append(on_interactions)
