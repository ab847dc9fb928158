"""Modulo reservation tables: which cycles of each processor are busy, modulo the period."""

from __future__ import annotations

import bisect
from typing import Iterable, Sequence


class ModuloTable:
    """Modulo reservation table of one processor.

    Busy intervals are kept sorted by start, each with its owner task, copied at -II, 0, +II,
    +2II so that a query window inside [0, 3 II) sees every wrap-around.
    """

    __slots__ = ("ii", "s", "e", "o", "load")

    def __init__(self, ii: int):
        self.ii = ii
        self.s: list[int] = []
        self.e: list[int] = []
        self.o: list[int] = []
        self.load = 0

    def earliest(self, lo: int, hi: int, dur: int) -> int | None:
        """Earliest t in [lo, hi] with [t, t + dur) free modulo II, or None."""
        if lo > hi:
            return None
        if dur == 0:
            return lo
        ii = self.ii
        if self.load + dur > ii:
            return None
        r = lo % ii
        base = lo - r
        limit = min(hi - base, r + ii - 1)
        x = r
        s, e = self.s, self.e
        while x <= limit:
            j = bisect.bisect_left(s, x + dur) - 1
            if j >= 0 and e[j] > x:
                x = e[j]
                continue
            return base + x
        return None

    def is_free(self, t: int, dur: int) -> bool:
        """Whether [t, t + dur) is free modulo II (dur <= II)."""
        if dur == 0:
            return True
        if self.load + dur > self.ii:
            return False
        x = t % self.ii
        j = bisect.bisect_left(self.s, x + dur) - 1
        return j < 0 or self.e[j] <= x

    def conflicts(self, t: int, dur: int) -> set[int]:
        """Owners of the intervals that [t, t + dur) overlaps modulo II."""
        if dur == 0:
            return set()
        x = t % self.ii
        out = set()
        j = bisect.bisect_left(self.s, x + dur) - 1
        while j >= 0 and self.s[j] > x - self.ii - 1:
            if self.e[j] > x:
                out.add(self.o[j])
            j -= 1
        return out

    def insert(self, t: int, dur: int, owner: int) -> None:
        if dur == 0:
            return
        ii = self.ii
        x = t % ii
        for a in (x - ii, x, x + ii, x + 2 * ii):
            if a + dur <= 0 or a >= 3 * ii:
                continue
            i = bisect.bisect_left(self.s, a)
            self.s.insert(i, a)
            self.e.insert(i, a + dur)
            self.o.insert(i, owner)
        self.load += dur

    def remove(self, owner: int, dur: int) -> None:
        if dur == 0:
            return
        keep = [i for i, o in enumerate(self.o) if o != owner]
        self.s = [self.s[i] for i in keep]
        self.e = [self.e[i] for i in keep]
        self.o = [self.o[i] for i in keep]
        self.load -= dur


def free_gaps(mrt: Sequence[ModuloTable], ii: int) -> list[tuple[int, int, int]]:
    """Maximal free intervals ``(length, processor, start)`` of each table modulo ii."""
    return gaps_mod([{(a % ii, a % ii + (b - a)) for a, b in zip(m.s, m.e)} for m in mrt], ii)


def gaps_mod(busy: Sequence[Iterable[tuple[int, int]]], ii: int) -> list[tuple[int, int, int]]:
    """Maximal free intervals ``(length, processor, start)`` modulo ii, given each processor's
    non-overlapping busy intervals ``[a, b)`` with a in [0, ii) and 0 < b - a <= ii."""
    out = []
    for p, ivs in enumerate(busy):
        ivs = sorted(ivs)
        if not ivs:
            out.append((ii, p, 0))
            continue
        # unroll one turn starting at the first busy interval
        first, x = ivs[0]
        for a, b in ivs[1:] + [(first + ii, first + ii)]:
            if a > x:
                out.append((a - x, p, x % ii))
            x = max(x, b)
    return out


__all__ = ["ModuloTable", "free_gaps", "gaps_mod"]
