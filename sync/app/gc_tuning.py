"""The worker's garbage collector, set for what this process holds and does.

What it holds: about 60,000 objects that live as long as the process (msgraph-sdk's and azure's modules and
classes, the app's clients). CPython's full collection walks every one of them, each time. `gc.freeze()` moves
them out of the collector's sight once they are all imported; they are never garbage.

What it does: many mailbox syncs at once, each keeping its request's objects (headers, bodies, futures) alive for
the tens of milliseconds the request takes. With CPython's default young-generation threshold (700 allocations),
most of them were scanned while still in use, promoted, and scanned again in the older generations. The bench's
small-change cycles spent 7 % of the sync's CPU in collections, the initial sync 0.8 s. A young generation of
10,000 lets them die young; what cyclic garbage lingers until the next collection is at most that many objects,
a few megabytes. The older generations keep CPython's multipliers.

Reference counting frees everything that is not in a cycle regardless; this only sets how often cycles are looked for.
"""
from __future__ import annotations

import gc

YOUNG_GENERATION = 10_000


def tune_collector() -> None:
    """At the end of the app's import: freeze what exists now, and let young objects die young."""
    freeze_loaded()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


def freeze_loaded() -> None:
    """Again once the activities' heavy modules are loaded (they are imported at the first activity, not at start,
    so that a cold start that only runs the timer stays light). Garbage is collected first, so none is frozen."""
    gc.collect()
    gc.freeze()
