from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChannelsConfig(AppConfig):
    name = "shequn.channels"
    label = "channels"
    verbose_name = _("Channels")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from shequn.core.models import Workspace
        from shequn.interactions.services import INTERACTION_HANDLERS

        from . import queries
        from .models import WeChatAccount

        # What this process remembers of accounts (queries.remembered_account) is confirmed by the row
        # versions, which an update made in the reading transaction itself does not change: an edit
        # made here forgets it at once.
        for model in (WeChatAccount, Workspace):
            post_save.connect(queries.forget_accounts_on_edit, sender=model, dispatch_uid=f"channels-forget-{model.__name__}")
            post_delete.connect(queries.forget_accounts_on_edit, sender=model,
                                dispatch_uid=f"channels-forget-deleted-{model.__name__}")

        from .code_services import on_interactions

        if on_interactions not in INTERACTION_HANDLERS:
            INTERACTION_HANDLERS.append(on_interactions)
