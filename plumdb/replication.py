"""PlumDB's Plumtree handler: every local write is broadcast, deliveries merged.

After plum_db's ``plum_db`` broadcast handler (``broadcast_data``, ``merge``,
``is_stale``, ``graft``), as a handler of the runtime's broadcast group
``"plumdb"`` (:func:`runtime.shell.broadcast.open_broadcast_group`).

Theory of operation
-------------------
*Message id* (plum_db's ``{PKey, Context}``): ``(encoded full key, context)``,
the context a tuple of ``(actor, counter)`` pairs; plain hashable data that
survives the wire (the codec turns arrays back into tuples). Every local write
makes a new dot, so every write has a new id. *Payload*: the object's plain
form (:func:`plumdb.core.object.object_to_plain`).

* ``is_stale(id)``: the local context descends the id's (the store's
  ``is_stale``): nothing in that write is new here. Fast: one store read.
* ``graft(id)``: our object of that key if its context descends the id's (it
  holds that write, perhaps more), else ``None``. plum_db answers only an exact
  context match; sending a descendant is equally correct and repairs more.
* ``merge(id, payload)``: called by the group's apply task off the tree path.
  It validates the payload and *queues* it; a flush task merges everything
  queued in one :meth:`~plumdb.store.Store.merge_batch` (one SQLite
  transaction for a whole batch of deliveries instead of one per delivery).
  The group's core has already decided novelty, so ``merge`` returns ``True``
  for a valid payload; whether it changed the store is counted here
  (``merged_new_count``).

The guard (docs/plumdb.md, Tombstones, rule 2): a delivered object for a key
this node does not hold is refused when its newest write is older than the
tombstone grace period. A broadcast older than that is either a stale graft
from a message cache or the resurrection of a value whose tombstone was
collected here; anti-entropy, not broadcast, brings old data to a node that
lacks it.

Error handling: a malformed id makes ``is_stale`` answer ``False`` and
``graft`` ``None`` (handlers must not raise); a malformed payload raises
:class:`~plumdb.errors.MalformedData` from ``merge``, which the group logs and
counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import final

import trio

from plumdb.core.causal import VersionVector, check_version_vector, descends
from plumdb.core.keys import FullPrefix, Key, decode_full_key, encode_full_key
from plumdb.core.object import Object, object_from_plain, object_to_plain
from plumdb.errors import MalformedData
from plumdb.store import Store
from runtime.shell.parking import ParkingSpot

__all__ = ["BroadcastHandler", "message_id"]

_log = logging.getLogger("plumdb.replication")

# Deliveries merged per batch: one SQLite transaction each; the group's apply
# task hands over at most 256 per turn, so a batch is usually one turn's worth.
MERGE_BATCH_MAX = 512


def message_id(full_prefix: FullPrefix, key: Key, obj: Object) -> tuple[object, ...]:
    """The broadcast id of a write: ``(encoded full key, context)``."""
    return (encode_full_key(full_prefix, key), obj.context)


def _parse_id(message_id: Hashable) -> tuple[FullPrefix, Key, VersionVector]:
    """``(full_prefix, key, context)`` of an id from the wire.

    Raises:
        MalformedData: not an id of ours.
    """
    if type(message_id) is not tuple or len(message_id) != 2:
        raise MalformedData("a plumdb message id is (encoded key, context)")
    encoded, context = message_id
    if type(encoded) is not bytes:
        raise MalformedData("a plumdb message id starts with an encoded key")
    full_prefix, key = decode_full_key(encoded)
    try:
        checked = check_version_vector(context)
    except (TypeError, ValueError) as error:
        raise MalformedData(f"bad context in a message id: {error}") from None
    return full_prefix, key, checked


@final
class BroadcastHandler:
    """The Plumtree handler of the ``"plumdb"`` broadcast group.

    Args:
        store: the node's store.
        admit: ``admit(local_or_None, remote) -> bool``, the merge guard.
        on_merged: called with the count of objects a flush changed.

    Resource handling: :meth:`run` is the flush task; :meth:`close` makes
    every method inert (the store is about to close).
    """

    def __init__(
        self,
        store: Store,
        *,
        admit: Callable[[Object | None, Object], bool],
    ) -> None:
        self._store = store
        self._admit = admit
        self._pending: list[tuple[FullPrefix, Key, Object]] = []
        self._spot = ParkingSpot()
        self._closed = False
        self.delivered_count = 0
        self.merged_new_count = 0
        self.refused_count = 0
        self.grafted_count = 0
        self.flush_count = 0

    def close(self) -> None:
        """Answer nothing from now on (idempotent)."""
        self._closed = True
        self._pending.clear()
        self._spot.wake()

    @property
    def pending_count(self) -> int:
        """Deliveries queued and not yet merged."""
        return len(self._pending)

    # The PlumtreeHandler protocol.

    def is_stale(self, message_id: Hashable) -> bool:
        """Whether the write *message_id* names is already known here."""
        if self._closed:
            return True
        try:
            full_prefix, key, context = _parse_id(message_id)
            return self._store.is_stale(full_prefix, key, context)
        except (MalformedData, TypeError, ValueError):
            return False

    def graft(self, message_id: Hashable) -> object | None:
        """Our object for the id's key, if it holds that write."""
        if self._closed:
            return None
        try:
            full_prefix, key, context = _parse_id(message_id)
            obj = self._store.get_object(full_prefix, key)
        except (MalformedData, TypeError, ValueError):
            return None
        if obj is None or not descends(obj.context, context):
            return None
        self.grafted_count += 1
        return object_to_plain(obj)

    def merge(self, message_id: Hashable, payload: object) -> bool:
        """Validate a delivery and queue it for the flush task.

        Raises:
            MalformedData: a malformed id or payload (the group counts it).
        """
        if self._closed:
            return False
        full_prefix, key, _ = _parse_id(message_id)
        obj = object_from_plain(payload)
        self.delivered_count += 1
        self._pending.append((full_prefix, key, obj))
        self._spot.wake()
        return True

    # The flush task.

    def _counted_admit(self, local: Object | None, remote: Object) -> bool:
        if self._admit(local, remote):
            return True
        self.refused_count += 1
        return False

    def flush(self) -> int:
        """Merge what is queued, in batches; how many changed the store."""
        changed = 0
        while self._pending and not self._closed:
            batch = self._pending[:MERGE_BATCH_MAX]
            del self._pending[:MERGE_BATCH_MAX]
            results = self._store.merge_batch(batch, admit=self._counted_admit)
            changed += sum(results)
            self.flush_count += 1
        self.merged_new_count += changed
        return changed

    async def run(self) -> None:
        """Flush deliveries as they come (runs until cancelled)."""
        while not self._closed:
            if not self._pending:
                await self._spot.park()
                continue
            try:
                self.flush()
            except Exception:
                # A backend failure: log and go on (what was queued is lost
                # here; anti-entropy repairs it).
                _log.exception("plumdb: merging broadcast deliveries failed")
            await trio.lowlevel.checkpoint()
