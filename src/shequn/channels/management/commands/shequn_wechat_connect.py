"""``shequn wechat connect``: connect a WeChat Official Account to a workspace and print the server URL
to paste into the account's console (开发 › 基本配置 › 服务器配置)."""

from __future__ import annotations

import getpass
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from shequn.channels import services
from shequn.channels.models import WeChatMode
from shequn.core.errors import ShequnError
from shequn.core.models import Workspace


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (OSError, KeyError):
        return "cli"


class Command(BaseCommand):
    @property  # type: ignore[override]
    def help(self) -> str:  # read when the parser is built, so in the active language
        return _("Connect a WeChat Official Account to a workspace and print the server URL for its console.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, metavar="SLUG")
        parser.add_argument("--app-id", required=True, help=_("AppID (开发者ID)"))
        parser.add_argument("--app-secret", required=True, help=_("AppSecret (开发者密码)"))
        parser.add_argument("--token", required=True, help=_("Token (令牌), the same as in the WeChat console"))
        parser.add_argument("--aes-key", default="", help=_("EncodingAESKey (消息加解密密钥), 43 characters"))
        parser.add_argument("--mode", default=WeChatMode.SAFE, choices=WeChatMode.values,
                            help=_("message encryption mode (default: safe)"))
        parser.add_argument("--timestamp-tolerance", type=int, default=None, metavar="SECONDS",
                            help=_("refuse requests older or newer than this many seconds (0 = off)"))
        parser.add_argument("--welcome-text", default=None, help=_("reply to new followers"))
        parser.add_argument("--reply-text", default=None, help=_("default reply to any message"))
        parser.add_argument("--base-url", default="", metavar="URL",
                            help=_("public address of this server, e.g. https://crm.example.com"))

    def handle(self, *args: Any, **opts: Any) -> None:
        workspace = Workspace.objects.filter(slug=opts["workspace"]).first()
        if workspace is None:
            raise CommandError(_("workspace %(slug)r not found") % {"slug": opts["workspace"]})
        actor = _actor()
        try:
            account, path = services.connect_account(
                workspace, opts["app_id"], opts["app_secret"], opts["token"], opts["aes_key"], opts["mode"], actor,
                timestamp_tolerance=opts["timestamp_tolerance"])
            if opts["welcome_text"] is not None or opts["reply_text"] is not None:
                services.set_auto_replies(workspace, account.pk, welcome_text=opts["welcome_text"],
                                          reply_text=opts["reply_text"], actor=actor)
        except ShequnError as exc:
            raise CommandError(exc.message) from None
        base = str(opts["base_url"]).rstrip("/")
        self.stdout.write(_("Official Account %(app_id)s connected to workspace %(slug)s (mode: %(mode)s).")
                          % {"app_id": account.app_id, "slug": workspace.slug, "mode": account.mode})
        self.stdout.write(_("Server URL (服务器地址):"))
        self.stdout.write(f"{base}{path}" if base else path)
        if not base:
            self.stdout.write(_("Put the public https:// address of this server in front of the path."))
