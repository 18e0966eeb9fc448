"""Which members are known to hold a tombstone: the evidence for collecting it.

The collection rule (DESIGN.md, Decisions; docs/plumdb.md, Tombstones): a
tombstone is removed only once every current member holds it, known through
anti-entropy, and a grace period has passed. This module keeps that
knowledge, per member and PlumDB partition, from the exchanges this node
initiated. It is sans-IO: times are integer nanoseconds of the wall clock the
driver passes in.

Theory of operation
-------------------
After a complete exchange of partition ``p`` with member ``m`` that started
at wall time ``t`` and was not truncated, the driver calls :meth:`record` with
the keys found *different*. For every other key we held at ``t``, ``m`` either
held the identical object (equal hashes) or lacked the key (``only_local``:
it collected the tombstone already, or never held any value that could come
back). Both count as acknowledging our tombstone; a ``different`` key does
not (``m`` holds something else, perhaps an older value).

:meth:`acknowledged` then holds for a tombstone written at ``w`` when, for
every member, the latest record of its partition started at or after
``w + grace`` and does not list the key. Requiring the exchange to start after
the grace period ends (rather than merely after ``w``) is the rule's second
half: by then no broadcast or repair carrying an older value is still in
flight (the grace period is chosen longer than any of those can live).

Only the latest record per (member, partition) is kept: a newer exchange
supersedes what an older one said. Memory is bounded by members x partitions
x the exchange's ``differences_max``.

Invariants
----------
* A record's ``different`` set is the exact ``different`` list of one
  complete, untruncated exchange.
* Records only move forward in time per (member, partition).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import attrs

__all__ = ["ExchangeRecord", "TombstoneAcknowledgements"]


@final
@attrs.frozen(kw_only=True)
class ExchangeRecord:
    """What one complete exchange with a member showed.

    Attributes:
        started_ns: wall time (ns) at which the exchange started.
        different: encoded full keys whose objects differed.
    """

    started_ns: int
    different: frozenset[bytes]


@final
class TombstoneAcknowledgements:
    """Per member and partition, the latest complete exchange's differences."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int], ExchangeRecord] = {}

    def record(
        self,
        member: str,
        partition: int,
        *,
        started_ns: int,
        different: Iterable[bytes],
    ) -> None:
        """Note a complete, untruncated exchange of *partition* with *member*."""
        key = (member, partition)
        old = self._records.get(key)
        if old is not None and old.started_ns > started_ns:
            return
        self._records[key] = ExchangeRecord(
            started_ns=started_ns, different=frozenset(different)
        )

    def forget(self, member: str) -> None:
        """Drop what is known about *member* (it left the cluster)."""
        for key in [k for k in self._records if k[0] == member]:
            del self._records[key]

    def latest(self, member: str, partition: int) -> ExchangeRecord | None:
        """The latest record of *partition* with *member*, if any."""
        return self._records.get((member, partition))

    def acknowledged(
        self,
        members: Iterable[str],
        partition: int,
        encoded_key: bytes,
        *,
        tombstone_ns: int,
        grace_ns: int,
    ) -> bool:
        """Whether every one of *members* is known to hold the tombstone.

        Args:
            members: every current member but this node.
            partition: the key's PlumDB partition.
            encoded_key: the key's encoded full key.
            tombstone_ns: the tombstone's (newest) write time.
            grace_ns: the grace period.
        """
        since = tombstone_ns + grace_ns
        for member in members:
            record = self._records.get((member, partition))
            if (
                record is None
                or record.started_ns < since
                or encoded_key in record.different
            ):
                return False
        return True

    def __len__(self) -> int:
        return len(self._records)
