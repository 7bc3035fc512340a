"""Reads of the channels domain (no writes)."""

from __future__ import annotations

from django.urls import reverse

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import InboundMessage, WeChatAccount


def account_by_endpoint_key(endpoint_key: str) -> WeChatAccount | None:
    """The account whose server URL carries ``endpoint_key``, with its workspace.

    The key is the account's locator and is unguessable; the request must still be signed with that
    account's token, so a key alone writes nothing."""
    if not endpoint_key:
        return None
    return WeChatAccount.objects.select_related("workspace").filter(endpoint_key=endpoint_key).first()


def server_path(account: WeChatAccount) -> str:
    """The path of the account's server URL (服务器地址), e.g. ``/wechat/<endpoint_key>/``."""
    return reverse("wechat:endpoint", kwargs={"endpoint_key": account.endpoint_key})


def accounts(workspace: Workspace) -> list[WeChatAccount]:
    return list(scoped(WeChatAccount, workspace).order_by("app_id"))


def find_inbound(account: WeChatAccount, dedup_key: str) -> InboundMessage | None:
    return scoped(InboundMessage, account.workspace_id).filter(account=account, dedup_key=dedup_key).first()
