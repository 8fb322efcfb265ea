"""One result row of a per-access loop timed against the batch path over the same trace.

The translation and workload benchmarks both time a Python loop against one batch call
and require the counters to agree; they share this row so the ratio is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoopBatchRow:
    #: What the row varies: the mapping's page size or the allocation policy.
    label: str
    accesses: int
    misses: int
    walk_reads: int
    loop_s: float
    batch_s: float
    identical: bool

    @property
    def ratio(self) -> float:
        """How many times faster the batch path ran than the per-access loop."""
        return self.loop_s / self.batch_s
