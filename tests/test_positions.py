"""Where a field is in a model file's text (reconciler.positions)."""

from __future__ import annotations

from reconciler.positions import _field_pattern, locate

TEXT = 'id = "meetkai:a"\n[capabilities]\nreasoning = true\n'


def test_a_field_is_found_after_its_parents_and_its_pattern_kept() -> None:
    assert locate(TEXT, ("id",)) == (1, 1)
    assert locate(TEXT, ("capabilities", "reasoning")) == (3, 1)
    assert _field_pattern.cache_info().currsize >= 2  # built once per field name


def test_a_long_key_is_located_without_being_kept() -> None:
    _field_pattern.cache_clear()
    long = "k" * 100
    assert locate(f"{long} = 1\n", (long,)) == (1, 1)
    assert locate(TEXT, (long,)) == (None, None)
    assert _field_pattern.cache_info().currsize == 0
