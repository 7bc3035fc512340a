"""``shequn wallet verify``: prove the stored value of a workspace; exit status 1 on any discrepancy."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from shequn.core.models import Workspace
from shequn.wallet import services

SHOWN = 50


class Command(BaseCommand):
    @property  # type: ignore[override]
    def help(self) -> str:
        return _("Check that every stored-value balance equals the sum of its entries and is never negative.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, metavar="SLUG")
        parser.add_argument("--json", action="store_true", help=_("print the full report as JSON"))

    def handle(self, *args: Any, **opts: Any) -> None:
        workspace = Workspace.objects.filter(slug=opts["workspace"]).first()
        if workspace is None:
            raise CommandError(_("workspace %(slug)r not found") % {"slug": opts["workspace"]})
        report = services.verify(workspace)
        if opts["json"]:
            self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False))
        else:
            self.stdout.write(_("%(ws)s: %(w)d wallets, %(e)d entries checked")
                              % {"ws": workspace.slug, "w": report.wallets, "e": report.entries})
            for d in report.discrepancies[:SHOWN]:
                self.stdout.write(_("  %(check)s: member %(member)s: expected %(expected)d, found %(actual)d%(ref)s")
                                  % {"check": d.check, "member": d.member_id, "expected": d.expected,
                                     "actual": d.actual, "ref": f" (#{d.ref})" if d.ref is not None else ""})
        if not report.ok:
            raise CommandError(_("%(n)d discrepancies in stored value") % {"n": len(report.discrepancies)},
                               returncode=1)
        if not opts["json"]:
            self.stdout.write(_("Stored value is consistent."))
