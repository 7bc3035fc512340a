from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InboxConfig(AppConfig):
    name = "shequn.inbox"
    label = "inbox"
    verbose_name = _("Service inbox")

    def ready(self) -> None:
        from shequn.conversations import services as conversations
        from shequn.interactions.services import INTERACTION_HANDLERS

        from .services import csat_reply_hook, on_interactions

        if on_interactions not in INTERACTION_HANDLERS:
            INTERACTION_HANDLERS.append(on_interactions)
        reply_hooks = getattr(conversations, "REPLY_HOOKS", None)
        if reply_hooks is not None and csat_reply_hook not in reply_hooks:
            reply_hooks.append(csat_reply_hook)
