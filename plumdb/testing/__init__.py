"""Test tools shipped with PlumDB: the backend conformance kit.

:func:`check_backend` runs the contract of :class:`plumdb.backend.Backend` on a
backend factory; every backend (memory, SQLite, yours) must pass it.
"""

from plumdb.testing._backend_conformance import check_backend

__all__ = ["check_backend"]
