"""Goal: the store over memory and over SQLite agree byte for byte, and both read
what a simple model predicts, through writes, siblings, merges, write-backs,
tombstone collection and reopening the file (memory-only prefixes refilled by
merging, as anti-entropy would).

Method: a hypothesis ``RuleBasedStateMachine`` (differential, after
hypothesis' ``test_database_agreement``) drives two local stores with the same
actor, one per backend, and a third "remote" replica whose objects are merged
in both directions. Every step reads one shared clock, so the newest write is
the one with the highest time, and with last-write-wins the model of a key is
just "the newest write this store knows of" (a concurrent older write can
never win, nor dominate a newer one). Tombstones are collected when the remote
has seen them (``is_stale``), which is the rule for a two-member cluster.

Checked after every step: both local stores hold identical bytes in every
partition and identical Merkle roots; each built tree equals one rebuilt from
the backend; ``to_list`` of every prefix is the model's live keys in key order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from plumdb import SqliteConfig, Store, StoreConfig
from plumdb.core.keys import decode_full_key, encode_key
from plumdb.core.merkle import MerkleTree
from plumdb.core.object import encode_object, object_hash

PREFIXES = [("p", "a"), ("p", "b"), ("mem", "x")]
KEYS: list[Any] = [0, 7, "a", "b", b"z", ("t", 1), ("t", 2)]
CONFIG = StoreConfig(partition_count=3, memory_prefixes=["mem"])

full_prefixes = st.sampled_from(PREFIXES)
keys = st.sampled_from(KEYS)
values = st.one_of(
    st.integers(-3, 3), st.text(max_size=2), st.lists(st.integers(0, 2), max_size=2)
)

# A model entry: (time, deleted, value) of the newest write known.
Entry = tuple[int, bool, Any]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "store.sqlite"
        clock = lambda: self.now  # noqa: E731 - one reading per step
        self.memory = Store(actor="local@h:1", clock=clock, config=CONFIG)
        self.sqlite = Store.open_sqlite(
            self.path,
            actor="local@h:1",
            clock=clock,
            config=CONFIG,
            sqlite=SqliteConfig(synchronous="NORMAL"),
        )
        self.remote = Store(actor="remote@h:1", clock=clock, config=CONFIG)
        self.local_model: dict[tuple[Any, Any], Entry] = {}
        self.remote_model: dict[tuple[Any, Any], Entry] = {}
        self.collected = False
        self.clock = clock

    def tick(self) -> None:
        self.now += 1

    def locals(self) -> list[Store]:
        return [self.memory, self.sqlite]

    # Local writes and reads.

    @rule(fp=full_prefixes, key=keys, value=values)
    def put(self, fp: Any, key: Any, value: Any) -> None:
        self.tick()
        for s in self.locals():
            s.put(fp, key, value)
        self.local_model[fp, key] = (self.now, False, value)

    @rule(fp=full_prefixes, key=keys)
    def delete(self, fp: Any, key: Any) -> None:
        self.tick()
        for s in self.locals():
            s.delete(fp, key)
        self.local_model[fp, key] = (self.now, True, None)

    @rule(fp=full_prefixes, key=keys, allow_put=st.booleans())
    def get(self, fp: Any, key: Any, allow_put: bool) -> None:
        self.tick()
        obj = self.memory.get_object(fp, key)
        results = [
            s.get(fp, key, allow_put=allow_put, default="<absent>")
            for s in self.locals()
        ]
        assert results[0] == results[1]
        entry = self.local_model.get((fp, key))
        expected = "<absent>" if entry is None or entry[1] else entry[2]
        assert results[0] == expected
        if (
            allow_put
            and obj is not None
            and obj.sibling_count > 1
            and entry is not None
        ):
            self.local_model[fp, key] = (self.now, entry[1], entry[2])

    # The other replica.

    @rule(fp=full_prefixes, key=keys, value=values)
    def remote_put(self, fp: Any, key: Any, value: Any) -> None:
        self.tick()
        self.remote.put(fp, key, value)
        self.remote_model[fp, key] = (self.now, False, value)

    @rule(fp=full_prefixes, key=keys)
    def remote_delete(self, fp: Any, key: Any) -> None:
        self.tick()
        self.remote.delete(fp, key)
        self.remote_model[fp, key] = (self.now, True, None)

    @rule(fp=full_prefixes, key=keys)
    def merge_from_remote(self, fp: Any, key: Any) -> None:
        obj = self.remote.get_object(fp, key)
        if obj is None:
            return
        stale = [s.is_stale(fp, key, obj) for s in self.locals()]
        changed = [s.merge(fp, key, obj) for s in self.locals()]
        assert changed[0] == changed[1]
        assert stale[0] == stale[1]
        if stale[0]:
            assert not changed[0]
        self._learn(self.local_model, self.remote_model, fp, key)

    @rule(fp=full_prefixes, key=keys)
    def merge_to_remote(self, fp: Any, key: Any) -> None:
        obj = self.memory.get_object(fp, key)
        if obj is None:
            return
        self.remote.merge(fp, key, obj)
        self._learn(self.remote_model, self.local_model, fp, key)

    def _learn(
        self, into: dict[Any, Entry], source: dict[Any, Entry], fp: Any, key: Any
    ) -> None:
        theirs = source.get((fp, key))
        if theirs is not None:
            into[fp, key] = max(into.get((fp, key), theirs), theirs, key=lambda e: e[0])

    # Maintenance.

    @rule()
    def collect_tombstones(self) -> None:
        self.tick()

        def acknowledged(fp: Any, key: Any, obj: Any) -> bool:
            return self.remote.is_stale(fp, key, obj)

        counts = [s.collect_tombstones(acknowledged, grace=0.0) for s in self.locals()]
        assert counts[0] == counts[1]
        self.collected = self.collected or counts[0] > 0

    @precondition(lambda self: not self.collected)
    @rule()
    def reopen_sqlite(self) -> None:
        # Same actor: fine only while no tombstone was collected (the dot floor
        # is kept in memory; docs/plumdb.md says to change actor on restart).
        self.sqlite.close()
        self.sqlite = Store.open_sqlite(
            self.path,
            actor="local@h:1",
            clock=self.clock,
            config=CONFIG,
            sqlite=SqliteConfig(synchronous="NORMAL"),
        )
        # Memory-only keys are gone; anti-entropy would refill them from a
        # peer that has them. Here the peer is the memory-backed twin.
        for partition in range(CONFIG.partition_count):
            assert not any(
                decode_full_key(k)[0][0] == "mem"
                for k, _ in self.sqlite.partition_objects(partition)
            )
            for encoded, obj in self.memory.partition_objects(partition):
                fp, key = decode_full_key(encoded)
                if fp[0] == "mem":
                    assert self.sqlite.merge(fp, key, obj)

    # Checks.

    @invariant()
    def backends_agree_byte_for_byte(self) -> None:
        for partition in range(CONFIG.partition_count):
            memory = [
                (k, encode_object(o))
                for k, o in self.memory.partition_objects(partition)
            ]
            sqlite = [
                (k, encode_object(o))
                for k, o in self.sqlite.partition_objects(partition)
            ]
            assert memory == sqlite
            assert (
                self.memory.tree(partition).root() == self.sqlite.tree(partition).root()
            )
            rebuilt = MerkleTree(CONFIG.merkle)
            for key, data in memory:
                rebuilt.insert(key, object_hash(data))
            assert rebuilt.root() == self.memory.tree(partition).root()

    @invariant()
    def reads_match_the_model(self) -> None:
        for fp in PREFIXES:
            expected = sorted(
                (
                    (key, entry[2])
                    for (f, key), entry in self.local_model.items()
                    if f == fp and not entry[1]
                ),
                key=lambda pair: encode_key(pair[0]),
            )
            for s in self.locals():
                assert s.to_list(fp) == expected

    def teardown(self) -> None:
        for s in [*self.locals(), self.remote]:
            s.close()
        self.directory.cleanup()


StoreMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None
)
TestStoreMachine = StoreMachine.TestCase
