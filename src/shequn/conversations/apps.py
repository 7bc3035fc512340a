from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    name = "shequn.conversations"
    label = "conversations"
    verbose_name = _("Conversations")

    def ready(self) -> None:
        from shequn.core import cache

        from .models import RuleSetVersion
        from .queries import VERSION_SOURCE

        cache.register(VERSION_SOURCE, RuleSetVersion, ("version", "generation"))
