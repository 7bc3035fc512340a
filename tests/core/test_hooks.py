"""``core.hooks``: handlers, and the statements they plan for an emitter that writes in one round trip."""

from __future__ import annotations

import pytest

from shequn.core import hooks


@pytest.fixture
def clean():
    saved = hooks._handlers[hooks.BADGE_AWARDED][:], dict(hooks._planners[hooks.BADGE_AWARDED])
    hooks._handlers[hooks.BADGE_AWARDED].clear()
    yield
    hooks._handlers[hooks.BADGE_AWARDED][:], planners = saved
    hooks._planners[hooks.BADGE_AWARDED] = planners


def test_unknown_events_are_refused():
    with pytest.raises(ValueError):
        hooks.on("nope", lambda **kw: None)
    with pytest.raises(ValueError):
        hooks.plan("nope", ("true", []))


def test_no_handler_plans_nothing(clean):
    assert hooks.plan(hooks.BADGE_AWARDED, ("true", []), member_id=1) == []


def test_plans_are_joined_in_registration_order_with_the_guard(clean):
    def first(**kw):
        pass

    def second(**kw):
        pass

    hooks.on(hooks.BADGE_AWARDED, first, plan=lambda guard, **kw: [(f"A WHERE {guard[0]}", [kw["member_id"], *guard[1]])])
    hooks.on(hooks.BADGE_AWARDED, second, plan=lambda guard, **kw: [])
    hooks.on(hooks.BADGE_AWARDED, first)  # registering again keeps one handler and its plan
    assert hooks.plan(hooks.BADGE_AWARDED, ("g = %s", [9]), member_id=4) == [("A WHERE g = %s", [4, 9])]


def test_one_handler_that_must_run_makes_the_emitter_run_them_all(clean):
    hooks.on(hooks.BADGE_AWARDED, lambda **kw: None, plan=lambda guard, **kw: [("A", [])])
    hooks.on(hooks.BADGE_AWARDED, lambda **kw: None)  # no plan
    assert hooks.plan(hooks.BADGE_AWARDED, ("true", []), member_id=1) is None


def test_a_planner_may_decline(clean):
    hooks.on(hooks.BADGE_AWARDED, lambda **kw: None, plan=lambda guard, **kw: None if kw["member_id"] == 2 else [])
    assert hooks.plan(hooks.BADGE_AWARDED, ("true", []), member_id=1) == []
    assert hooks.plan(hooks.BADGE_AWARDED, ("true", []), member_id=2) is None
