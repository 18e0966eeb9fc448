"""Virtual actors (grains) in the manner of Erleans / Orleans (a later round)."""

__all__: list[str] = []
