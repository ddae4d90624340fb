"""Tests for cbr_lite.index_choice: parsing --index and the default lists and probes."""

import pytest

from cbr_lite.errors import CbrError
from cbr_lite.index_choice import IndexSpec, default_nlist, default_nprobe, parse_index, resolve_spec


@pytest.mark.parametrize("text, expected", [
    ("exact", IndexSpec()), ("ivf", IndexSpec("ivf")), ("ivf:64", IndexSpec("ivf", 64)),
    ("ivf:64:8", IndexSpec("ivf", 64, 8)),
])
def test_parse_index(text, expected):
    assert parse_index(text) == expected and str(expected) == text


@pytest.mark.parametrize("text", ["", "ivf:", "ivf:0", "ivf:8:0", "ivf:8:9", "ivf:x", "ivf:8:4:2", "flat", "exact:3", "ivf:\u00b2"])
def test_parse_index_refuses_anything_else(text):
    with pytest.raises(CbrError, match="index"):
        parse_index(text)


def test_defaults_grow_with_the_index_and_stay_in_range():
    assert default_nlist(1) == 1 and default_nlist(10) <= 10
    assert default_nlist(1_000_000) == 1024 and default_nprobe(1024) == 16
    assert default_nprobe(2) == 2
    assert resolve_spec(IndexSpec("ivf"), 100) == (8, 8)
    assert resolve_spec(IndexSpec("ivf", 64), 1000) == (64, 8)
    assert resolve_spec(IndexSpec("ivf", 64, 3), 1000) == (64, 3)
    with pytest.raises(CbrError, match="at most 10 lists"):
        resolve_spec(IndexSpec("ivf", 11), 10)
