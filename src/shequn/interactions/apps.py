from django.apps import AppConfig


class InteractionsConfig(AppConfig):
    name = "shequn.interactions"
    label = "interactions"

    def ready(self) -> None:
        from shequn.core import cache

        from .models import TouchpointsVersion
        from .services import TOUCHPOINTS_SOURCE

        cache.register(TOUCHPOINTS_SOURCE, TouchpointsVersion)
