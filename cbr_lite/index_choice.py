"""What ``--index`` asks for: the exact head, or an IVF head with how many lists and probes.

The exact head (:mod:`cbr_lite.retrieval`) compares a query with every index image: its time per query is
the time to read the index (notebook 07), so it suits indexes up to some tens of MB, tens of thousands of
classes. The IVF head (:mod:`cbr_lite.ivf`) reads only ``nprobe`` of ``nlist`` lists: for hundreds of
thousands to millions of classes, at the price of k-means when it is built and a recall below 1.

This module is light (no Keras): ``--index`` is checked with it before anything heavy loads.

>>> parse_index("ivf:1024:16"), default_nlist(1_000_000), default_nprobe(1024)
(IndexSpec(kind='ivf', nlist=1024, nprobe=16), 1024, 16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cbr_lite.errors import CbrError


def default_nlist(images: int) -> int:
    """About ``sqrt(images)`` lists (the usual IVF rule), a power of two, at least 1 and at most ``images``."""
    return int(min(images, max(1, 2 ** round(math.log2(math.sqrt(max(images, 1)))))))


def default_nprobe(nlist: int) -> int:
    """Probe 1/64 of the lists, at least 8 (at most all of them).

    Measured by ``cbr-lite bench --ivf`` (docs/benchmark.md): with :func:`default_nlist` lists this finds the
    exact top-1 class for about 97-99% of the queries from 10^5 to 10^6 classes; 4 probes of 256 lists find
    only 94%.
    """
    return int(min(nlist, max(8, nlist // 64)))


@dataclass(frozen=True)
class IndexSpec:
    """What ``--index`` asks for: ``kind`` ``"exact"`` or ``"ivf"``; for IVF, lists and probes (None: default)."""

    kind: str = "exact"
    nlist: int | None = None
    nprobe: int | None = None

    def __str__(self) -> str:
        if self.kind == "exact":
            return "exact"
        return ":".join(["ivf"] + [str(v) for v in (self.nlist, self.nprobe) if v is not None])


def parse_index(text: str) -> IndexSpec:
    """``"exact"`` | ``"ivf"`` | ``"ivf:NLIST"`` | ``"ivf:NLIST:NPROBE"`` (or an :class:`IndexSpec`) -> :class:`IndexSpec`."""
    if isinstance(text, IndexSpec):
        return text
    parts = str(text).split(":")
    usage = "use exact, ivf, ivf:NLIST or ivf:NLIST:NPROBE (whole numbers, NPROBE <= NLIST)"
    if parts == ["exact"]:
        return IndexSpec()
    if parts[0] != "ivf" or len(parts) > 3 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts[1:]):
        raise CbrError(f"unknown index {text!r}: {usage}")
    numbers = [int(p) for p in parts[1:]] + [None] * (3 - len(parts))
    if numbers[1] is not None and numbers[1] > numbers[0]:
        raise CbrError(f"index {text!r} probes more lists than it has: {usage}")
    return IndexSpec("ivf", *numbers)


def resolve_spec(spec: IndexSpec, images: int) -> tuple[int, int]:
    """``(nlist, nprobe)`` for an index of ``images`` images: the given ones, else the defaults."""
    nlist = spec.nlist if spec.nlist is not None else default_nlist(images)
    if nlist > images:
        raise CbrError(f"index {spec}: {nlist} lists for {images} index images; use at most {images} lists")
    nprobe = spec.nprobe if spec.nprobe is not None else default_nprobe(nlist)
    return nlist, min(nprobe, nlist)
