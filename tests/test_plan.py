"""make_plan and its helpers, with plain data only: no files, no network."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.plan import (
    Action,
    Desired,
    FieldChange,
    FieldOp,
    IgnoreRule,
    Plan,
    PruneOptions,
    diff_definitions,
    is_empty,
    make_plan,
    parse_field_path,
    pending,
    summary,
    values_equal,
    writes,
)
from reconciler.spec import Entry


def body(model_id: str = "meetkai:team-a", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": model_id,
        "provider": "openai-compatible",
        "modelId": model_id.split(":")[-1],
        "apiFormat": "responses",
        "created": 1704067200,
        "auth": {"type": "api-key", "envVar": "KEY"},
        "capabilities": {"modalities": {"input": ["text"], "output": ["text"]}, "reasoning": True},
        "contextWindow": 8192,
    }
    out.update(extra)
    return out


def entry(
    definition: dict[str, Any], *, immutable: bool = False, source: str = "database"
) -> Entry:
    return Entry(
        id=definition["id"],
        provider=definition["provider"],
        model_id=definition["modelId"],
        source=source,
        immutable=immutable,
        definition={**definition, "source": source, "immutable": immutable},
    )


def desired(*bodies: dict[str, Any]) -> dict[str, Desired]:
    return {b["id"]: Desired(b, f"models.d/{b['id'].split(':')[-1]}.toml") for b in bodies}


def only(plan: Plan) -> Any:
    assert len(plan.changes) == 1, plan.changes
    return plan.changes[0]


def fields(plan: Plan) -> list[tuple[tuple[Any, ...], FieldOp, Any, Any]]:
    # A list, sorted by path: values may be lists (unhashable), and order is part of the contract.
    return [(f.path, f.op, f.old, f.new) for f in only(plan).fields]


# --- actions ----------------------------------------------------------------------------------


def test_create_when_absent_carries_body_and_file() -> None:
    b = body()
    change = only(make_plan(desired(b), []))
    assert change.action is Action.CREATE
    assert change.body == b
    assert change.file == "models.d/team-a.toml"
    assert FieldChange(("contextWindow",), FieldOp.ADD, None, 8192) in change.fields


def test_unchanged_when_equal() -> None:
    change = only(make_plan(desired(body()), [entry(body())]))
    assert change.action is Action.UNCHANGED
    assert change.fields == ()
    assert change.body is None


def test_held_is_trusted_for_that_very_body_only() -> None:
    # held: what the list decoder found (the live definition holds this body's values). An
    # equal body that is another object is no such finding: compared as usual.
    want = body(contextWindow=16384)
    live = [entry(body())]
    assert only(make_plan(desired(want), live, held={want["id"]: dict(want)})).action is (
        Action.UPDATE
    )
    trusted = make_plan(desired(want), live, held={want["id"]: want})
    assert only(trusted).action is Action.UNCHANGED and only(trusted).fields == ()


def test_update_reports_old_and_new() -> None:
    plan = make_plan(desired(body(contextWindow=16384)), [entry(body())])
    assert only(plan).action is Action.UPDATE
    assert only(plan).body == body(contextWindow=16384)
    assert fields(plan) == [(("contextWindow",), FieldOp.CHANGE, 8192, 16384)]


def test_nested_change_reports_leaf_path() -> None:
    want = body()
    want["capabilities"] = {**want["capabilities"], "reasoning": False}
    plan = make_plan(desired(want), [entry(body())])
    assert fields(plan) == [(("capabilities", "reasoning"), FieldOp.CHANGE, True, False)]


def test_field_added_to_file_is_add() -> None:
    plan = make_plan(desired(body(rpm=60)), [entry(body())])
    assert fields(plan) == [(("rpm",), FieldOp.ADD, None, 60)]


def test_field_removed_from_file_is_remove() -> None:
    plan = make_plan(desired(body()), [entry(body(displayName="Old name"))])
    assert only(plan).action is Action.UPDATE
    assert fields(plan) == [(("displayName",), FieldOp.REMOVE, "Old name", None)]


def test_removed_true_flag_is_a_change() -> None:
    plan = make_plan(desired(body()), [entry(body(hidden=True))])
    assert fields(plan) == [(("hidden",), FieldOp.REMOVE, True, None)]


def test_immutable_is_never_written_even_when_different() -> None:
    plan = make_plan(
        desired(body(rpm=1)), [entry(body(), immutable=True, source="yaml")], prune=None
    )
    change = only(plan)
    assert change.action is Action.IMMUTABLE
    assert change.body is None
    assert "immutable" in change.reason and "yaml" in change.reason
    assert writes(plan) == []
    assert not pending(plan)


def test_immutable_flag_inside_definition_only() -> None:
    live = entry(body())
    live = live.model_copy(update={"definition": {**live.definition, "immutable": True}})
    assert only(make_plan(desired(body()), [live])).action is Action.IMMUTABLE


def test_invalid_even_if_live() -> None:
    plan = make_plan({}, [entry(body())], invalid={"meetkai:team-a": "models.d/a.toml"})
    change = only(plan)
    assert change.action is Action.INVALID
    assert change.file == "models.d/a.toml"
    assert "failed validation" in change.reason
    assert not pending(plan)


def test_invalid_wins_over_desired() -> None:
    plan = make_plan(desired(body()), [], invalid={"meetkai:team-a": "x.toml"})
    assert only(plan).action is Action.INVALID


def test_live_only_entries_are_left_alone_without_prune() -> None:
    plan = make_plan(desired(body("meetkai:team-a")), [entry(body("meetkai:team-b"))])
    assert [c.id for c in plan.changes] == ["meetkai:team-a"]
    assert plan.prune_skipped is None


def test_changes_sorted_by_id() -> None:
    plan = make_plan(
        desired(body("meetkai:c"), body("meetkai:a")),
        [entry(body("meetkai:b"))],
        invalid={"meetkai:b": "b.toml"},
    )
    assert [c.id for c in plan.changes] == ["meetkai:a", "meetkai:b", "meetkai:c"]


# --- normalisation ----------------------------------------------------------------------------


def test_server_managed_keys_dropped() -> None:
    live = entry(body())
    assert live.definition["source"] == "database"
    assert only(make_plan(desired(body()), [live])).action is Action.UNCHANGED


def test_a_definition_holding_the_file_s_very_values_is_unchanged_and_nothing_else_is() -> None:
    # What a diff's list decoder makes of an entry equal to its file (registry._Sharing).
    want = body()
    shared = entry(want)
    assert only(make_plan(desired(want), [shared])).action is Action.UNCHANGED
    # The same values, and a key besides the server-managed ones: compared as always.
    more = entry({**want, "rpm": 60})
    assert fields(make_plan(desired(want), [more])) == [(("rpm",), FieldOp.REMOVE, 60, None)]
    served = entry({**want, "hidden": False})  # a server default: no difference, as always
    assert only(make_plan(desired(want), [served])).action is Action.UNCHANGED
    nan = body(temperature=float("nan"))  # the very same object, whatever == thinks of it
    assert only(make_plan(desired(nan), [entry(nan)])).action is Action.UNCHANGED


def test_server_defaults_are_no_difference() -> None:
    served = body(hidden=False, aliases=[], rerouteRules=[], defaultParams={}, baseUrl=None)
    served["capabilities"] = {
        **served["capabilities"],
        "supportsTemperature": False,
        "supportsTopP": False,
        "maxImageResolution": {"maxWidth": None},
    }
    assert only(make_plan(desired(body()), [entry(served)])).action is Action.UNCHANGED


def test_unknown_live_key_is_no_difference() -> None:
    # A newer API's field ("version"): no file can declare it, so diffing it would never settle.
    plan = make_plan(desired(body()), [entry(body(version=1, rateLimitsV2={"x": 1}))])
    assert only(plan).action is Action.UNCHANGED


def test_known_live_key_with_value_is_a_remove() -> None:
    plan = make_plan(desired(body()), [entry(body(aliases=["x"]))])
    assert fields(plan) == [(("aliases",), FieldOp.REMOVE, ["x"], None)]


def test_empty_desired_value_equals_absent_live() -> None:
    assert only(make_plan(desired(body(aliases=[])), [entry(body())])).action is Action.UNCHANGED


def test_null_in_desired_equals_absent() -> None:
    assert only(make_plan(desired(body(rpm=None)), [entry(body())])).action is Action.UNCHANGED


def test_int_and_float_equal() -> None:
    want = body(defaultParams={"temperature": 1})
    have = body(defaultParams={"temperature": 1.0})
    assert only(make_plan(desired(want), [entry(have)])).action is Action.UNCHANGED


def test_true_is_not_one() -> None:
    assert not values_equal(True, 1)
    assert not values_equal(1, True)
    assert not values_equal(0, False)
    assert values_equal(2, 2.0)
    assert not values_equal("1", 1)
    assert values_equal(float("nan"), float("nan"))


@pytest.mark.parametrize(
    ("value", "empty"),
    [
        (None, True),
        ([], True),
        ({}, True),
        (False, True),
        ({"a": None, "b": {"c": []}}, True),
        (0, False),
        ("", False),
        (True, False),
        ([None], False),
        ({"a": 1}, False),
    ],
)
def test_is_empty(value: Any, empty: bool) -> None:
    assert is_empty(value) is empty


def test_list_order_matters() -> None:
    want = body(aliases=["a", "b"])
    plan = make_plan(desired(want), [entry(body(aliases=["b", "a"]))])
    assert fields(plan) == [(("aliases",), FieldOp.CHANGE, ["b", "a"], ["a", "b"])]


def test_list_of_dicts_same_length_diffed_per_element() -> None:
    rule = {"trigger": {"type": "context-exceeded"}, "targetModelId": "meetkai:big"}
    want = body(rerouteRules=[rule, {**rule, "targetModelId": "meetkai:new"}])
    have = body(rerouteRules=[rule, {**rule, "targetModelId": "meetkai:old", "log": False}])
    plan = make_plan(desired(want), [entry(have)])
    assert fields(plan) == [
        (("rerouteRules", 1, "targetModelId"), FieldOp.CHANGE, "meetkai:old", "meetkai:new")
    ]


def test_list_of_dicts_different_length_compared_whole() -> None:
    rule = {"trigger": {"type": "context-exceeded"}, "targetModelId": "meetkai:big"}
    plan = make_plan(desired(body(rerouteRules=[rule, rule])), [entry(body(rerouteRules=[rule]))])
    assert fields(plan) == [(("rerouteRules",), FieldOp.CHANGE, [rule], [rule, rule])]


def test_list_whole_comparison_uses_normalised_equality() -> None:
    want = body(rateLimits=[{"scope": "global", "rpm": 10}])
    have = body(rateLimits=[{"scope": "global", "rpm": 10.0, "queue": None}])
    assert only(make_plan(desired(want), [entry(have)])).action is Action.UNCHANGED


def test_type_change_of_a_block() -> None:
    want = body(auth={"type": "none"})
    plan = make_plan(desired(want), [entry(body())])
    assert fields(plan) == [
        (("auth", "envVar"), FieldOp.REMOVE, "KEY", None),
        (("auth", "type"), FieldOp.CHANGE, "api-key", "none"),
    ]


def test_changed_secret_is_a_change() -> None:
    want = body(auth={"type": "api-key", "value": "new-secret"})
    have = body(auth={"type": "api-key", "value": "old-secret"})
    plan = make_plan(desired(want), [entry(have)])
    assert fields(plan) == [(("auth", "value"), FieldOp.CHANGE, "old-secret", "new-secret")]


def test_diff_definitions_is_usable_alone() -> None:
    assert list(diff_definitions(body(), {**body(), "source": "database"})) == []


# --- ignore rules -----------------------------------------------------------------------------


def test_ignore_exact_path() -> None:
    want = body()
    have = body()
    have["capabilities"] = {**have["capabilities"], "supportsTopP": True}
    rule = IgnoreRule(("capabilities.supportsTopP",))
    assert only(make_plan(desired(want), [entry(have)])).action is Action.UPDATE
    assert only(make_plan(desired(want), [entry(have)], ignore=[rule])).action is Action.UNCHANGED


def test_ignore_prefix_covers_children_and_list_elements() -> None:
    rule = {"trigger": {"type": "context-exceeded"}, "targetModelId": "a"}
    want = body(rerouteRules=[rule])
    have = body(rerouteRules=[{**rule, "targetModelId": "b"}])
    plan = make_plan(desired(want), [entry(have)], ignore=[IgnoreRule(("rerouteRules",))])
    assert only(plan).action is Action.UNCHANGED
    plan = make_plan(
        desired(want), [entry(have)], ignore=[IgnoreRule(("rerouteRules.targetModelId",))]
    )
    assert only(plan).action is Action.UNCHANGED
    plan = make_plan(
        desired(want), [entry(have)], ignore=[IgnoreRule(("rerouteRules[1].targetModelId",))]
    )
    assert only(plan).action is Action.UPDATE


def test_ignore_does_not_match_a_longer_key_name() -> None:
    plan = make_plan(desired(body(rpm=2)), [entry(body(rpm=1))], ignore=[IgnoreRule(("rp",))])
    assert only(plan).action is Action.UPDATE


def test_ignore_scoped_by_ids() -> None:
    rule = IgnoreRule(("rpm",), ids=("meetkai:team-*",))
    plan = make_plan(
        desired(body("meetkai:team-a", rpm=2), body("meetkai:other", rpm=2)),
        [entry(body("meetkai:team-a", rpm=1)), entry(body("meetkai:other", rpm=1))],
        ignore=[rule],
    )
    actions = {c.id: c.action for c in plan.changes}
    assert actions == {"meetkai:team-a": Action.UNCHANGED, "meetkai:other": Action.UPDATE}


def test_update_body_keeps_live_value_of_ignored_field() -> None:
    have = body(rpm=500)
    want = body(contextWindow=1)
    plan = make_plan(desired(want), [entry(have)], ignore=[IgnoreRule(("rpm",))])
    change = only(plan)
    assert change.action is Action.UPDATE
    assert change.body is not None and change.body["rpm"] == 500
    assert change.body["contextWindow"] == 1
    assert "rpm" not in want  # the input is not mutated


def test_update_body_drops_ignored_field_absent_live() -> None:
    plan = make_plan(
        desired(body(rpm=5, contextWindow=1)), [entry(body())], ignore=[IgnoreRule(("rpm",))]
    )
    assert only(plan).body is not None and "rpm" not in only(plan).body


def test_parse_field_path() -> None:
    assert parse_field_path("rerouteRules[0].trigger") == ("rerouteRules", 0, "trigger")
    assert parse_field_path("capabilities.supportsTopP") == ("capabilities", "supportsTopP")
    assert parse_field_path("auth.strategies[*].value") == ("auth", "strategies", "*", "value")


# --- prune ------------------------------------------------------------------------------------

OWNS = PruneOptions(owns=("meetkai:team-*",))


def test_prune_deletes_owned_orphans_only() -> None:
    live = [
        entry(body("meetkai:team-a")),
        entry(body("meetkai:team-gone")),
        entry(body("meetkai:someone-else")),
    ]
    plan = make_plan(desired(body("meetkai:team-a")), live, prune=OWNS)
    actions = {c.id: c.action for c in plan.changes}
    assert actions == {"meetkai:team-a": Action.UNCHANGED, "meetkai:team-gone": Action.DELETE}
    assert plan.prune_skipped is None
    assert pending(plan)


def test_prune_never_deletes_immutable() -> None:
    live = [entry(body("meetkai:team-a")), entry(body("meetkai:team-yaml"), immutable=True)]
    plan = make_plan(desired(body("meetkai:team-a")), live, prune=OWNS)
    assert [c.action for c in plan.changes] == [Action.UNCHANGED]


def test_without_prune_nothing_is_deleted() -> None:
    plan = make_plan(desired(body("meetkai:team-a")), [entry(body("meetkai:team-gone"))])
    assert all(c.action is not Action.DELETE for c in plan.changes)


def test_prune_without_owns_is_refused() -> None:
    with pytest.raises(ValueError, match="ownership"):
        make_plan(desired(body()), [], prune=PruneOptions(owns=()))


def test_prune_skipped_when_a_file_is_invalid() -> None:
    live = [entry(body("meetkai:team-gone"))]
    plan = make_plan(
        desired(body("meetkai:team-a")), live, invalid={"meetkai:team-x": "x.toml"}, prune=OWNS
    )
    assert Action.DELETE not in {c.action for c in plan.changes}
    assert plan.prune_skipped is not None and "failed validation" in plan.prune_skipped


def test_prune_skipped_on_load_errors_without_an_id() -> None:
    plan = make_plan(
        desired(body("meetkai:team-a")),
        [entry(body("meetkai:team-gone"))],
        prune=OWNS,
        load_errors=1,
    )
    assert Action.DELETE not in {c.action for c in plan.changes}
    assert plan.prune_skipped is not None and "1 file(s)" in plan.prune_skipped


def test_prune_skipped_when_the_live_list_is_a_page() -> None:
    # has_more: the registry pages, so an entry missing from the list may still exist.
    live = [entry(body("meetkai:team-a")), entry(body("meetkai:team-gone"))]
    plan = make_plan(desired(body("meetkai:team-b")), live, prune=OWNS, live_complete=False)
    assert {c.id: c.action for c in plan.changes} == {"meetkai:team-b": Action.CREATE}
    assert plan.prune_skipped is not None and "has_more" in plan.prune_skipped
    # The same list, complete, prunes.
    full = make_plan(desired(body("meetkai:team-b")), live, prune=OWNS)
    assert [c.id for c in full.changes if c.action is Action.DELETE] == [
        "meetkai:team-a",
        "meetkai:team-gone",
    ]


def test_invalid_id_is_never_pruned() -> None:
    # Its file failed, but the model is still wanted: never a delete.
    live = [entry(body("meetkai:team-a")), entry(body("meetkai:team-bad"))]
    plan = make_plan(
        desired(body("meetkai:team-a")), live, invalid={"meetkai:team-bad": "bad.toml"}, prune=OWNS
    )
    assert {c.id: c.action for c in plan.changes}["meetkai:team-bad"] is Action.INVALID


def test_prune_skipped_when_directory_is_empty() -> None:
    plan = make_plan({}, [entry(body("meetkai:team-gone"))], prune=OWNS)
    assert plan.changes == ()
    assert plan.prune_skipped is not None and "no valid model" in plan.prune_skipped


def test_prune_over_max_deletes_is_refused_entirely() -> None:
    live = [entry(body(f"meetkai:team-{i}")) for i in range(3)]
    plan = make_plan(
        desired(body("meetkai:keep")), live, prune=PruneOptions(("meetkai:team-*",), max_deletes=2)
    )
    assert [c.action for c in plan.changes] == [Action.CREATE]
    assert plan.prune_skipped is not None
    assert "3" in plan.prune_skipped and "--force" in plan.prune_skipped


def test_prune_at_max_deletes_goes_ahead() -> None:
    live = [entry(body(f"meetkai:team-{i}")) for i in range(2)]
    plan = make_plan(
        desired(body("meetkai:keep")), live, prune=PruneOptions(("meetkai:team-*",), max_deletes=2)
    )
    assert summary(plan)["delete"] == 2


def test_prune_force_overrides_max_deletes() -> None:
    live = [entry(body(f"meetkai:team-{i}")) for i in range(3)]
    opts = PruneOptions(("meetkai:team-*",), max_deletes=2, force=True)
    plan = make_plan(desired(body("meetkai:keep")), live, prune=opts)
    assert summary(plan)["delete"] == 3
    assert plan.prune_skipped is None


def test_prune_patterns_are_exact_fnmatch() -> None:
    live = [entry(body("meetkai:team-a")), entry(body("meetkai:team-b"))]
    opts = PruneOptions(("meetkai:team-a", "other:*"))
    plan = make_plan(desired(body("meetkai:keep")), live, prune=opts)
    assert [c.id for c in plan.changes if c.action is Action.DELETE] == ["meetkai:team-a"]


# --- summary and pending ----------------------------------------------------------------------


def test_summary_counts_every_action() -> None:
    plan = make_plan(
        desired(
            body("meetkai:team-new"), body("meetkai:team-upd", rpm=2), body("meetkai:team-same")
        ),
        [
            entry(body("meetkai:team-upd", rpm=1)),
            entry(body("meetkai:team-same")),
            entry(body("meetkai:team-gone")),
        ],
        invalid={"meetkai:team-bad": "bad.toml"},
        prune=OWNS,
    )
    assert summary(plan) == {
        "create": 1,
        "update": 1,
        "delete": 0,  # skipped: a file is invalid
        "unchanged": 1,
        "immutable": 0,
        "invalid": 1,
    }
    assert pending(plan)


def test_not_pending_when_only_unchanged_immutable_invalid() -> None:
    plan = make_plan(
        desired(body("meetkai:same"), body("meetkai:yaml")),
        [entry(body("meetkai:same")), entry(body("meetkai:yaml"), immutable=True)],
        invalid={"meetkai:bad": "bad.toml"},
    )
    assert not pending(plan)
    assert writes(plan) == []


def test_plan_is_deterministic() -> None:
    args = (desired(body("meetkai:b", rpm=2), body("meetkai:a")), [entry(body("meetkai:b"))])
    assert make_plan(*args) == make_plan(*args)


def test_bool_and_int_differ_inside_a_definition() -> None:
    # Python says True == 1: the no-op fast path must not.
    plan = make_plan(desired(body(hidden=True)), [entry(body(hidden=1))])
    assert fields(plan) == [(("hidden",), FieldOp.CHANGE, 1, True)]
