"""The cyclic garbage collector, set for a process that works through a stream of records.

CPython looks for reference cycles after every 700 net allocations of container objects. A batch
of lockoutd holds a few objects per record until it is committed (the consumer's records, the
decoded tuples, the records to publish), so most young collections find nothing to free and
move the whole batch a generation up, and every few batches a full collection walks every
object of the process, the imported modules and validated settings included: about 12 % of the
daemon's CPU at 70,000 events/s, in pauses of about 50 ms (bench/README.md, "The garbage
collector, and end to end again"). Nearly all of lockoutd's garbage is freed by reference
counting the moment a batch ends; the cycle collector is kept for the few cycles there are, and
run less often.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 50_000
"""Net container allocations between two young collections: room for a whole batch
(``kafka.max_batch_records``, 5,000 by default, a few objects each) between two of them."""


def settle_after_startup() -> None:
    """Collect what starting up left behind, exempt the rest from later collections, and look
    for cycles only every :data:`YOUNG_COLLECTION_EVERY` allocations from now on.

    Call once, after the configuration and the rules are loaded and before the first record:
    what exists then (modules, settings, rules) lives as long as the process, so walking it
    again in every full collection finds nothing.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, oldest)
