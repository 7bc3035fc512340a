"""``shequn loyalty verify``: prove the points ledger of a workspace; exit status 1 on any discrepancy."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from shequn.core.models import Workspace
from shequn.loyalty import services

SHOWN = 50


class Command(BaseCommand):
    @property  # type: ignore[override]
    def help(self) -> str:
        return _("Check that every points balance equals the sum of its entries and lots and is never negative.")

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
            self.stdout.write(_("%(ws)s: %(b)d balances, %(e)d entries, %(l)d lots checked")
                              % {"ws": workspace.slug, "b": report.balances, "e": report.entries, "l": report.lots})
            for d in report.discrepancies[:SHOWN]:
                self.stdout.write(_("  %(check)s: member %(member)s, %(type)s: expected %(expected)d, found %(actual)d%(ref)s")
                                  % {"check": d.check, "member": d.member_id, "type": d.point_type,
                                     "expected": d.expected, "actual": d.actual,
                                     "ref": f" (#{d.ref})" if d.ref is not None else ""})
            if len(report.discrepancies) > SHOWN:
                self.stdout.write(_("  … and %(n)d more") % {"n": len(report.discrepancies) - SHOWN})
        if not report.ok:
            raise CommandError(_("%(n)d discrepancies in the points ledger") % {"n": len(report.discrepancies)},
                               returncode=1)
        if not opts["json"]:
            self.stdout.write(_("The points ledger is consistent."))
