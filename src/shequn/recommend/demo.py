"""Demo data for personalised offers: the item statistics of the demo workspace, computed from the
six months of demo purchases exactly as the periodic task does, so ranked offers show at once."""

from __future__ import annotations

import datetime as dt
import random

from shequn.core.models import Workspace

from .services import refresh_affinity


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    """Deterministic (no randomness needed: the statistics follow from the purchases); call it after
    the purchases are in."""
    del rng
    refresh_affinity(workspace, at=now)
