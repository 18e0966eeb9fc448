"""Sans-IO protocol cores: plain classes that take events and return effects.

Nothing in this package imports trio, sockets or the clock (tests/test_layering.py
checks it), so the trio shell and the simulator can drive the same code.
"""
