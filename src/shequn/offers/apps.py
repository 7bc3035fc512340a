from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OffersConfig(AppConfig):
    name = "shequn.offers"
    label = "offers"
    verbose_name = _("Offers and coupons")

    def ready(self) -> None:
        from shequn.core import hooks

        from .services import on_tier_changed

        hooks.on(hooks.TIER_CHANGED, on_tier_changed)
