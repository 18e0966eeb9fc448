"""PlumDB: a replicated key-value store over Plumtree broadcast (issue 5)."""

__all__: list[str] = []
