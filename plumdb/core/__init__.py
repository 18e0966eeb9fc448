"""PlumDB's pure cores: keys, causal contexts, objects, Merkle trees, exchanges.

Nothing in this package does I/O, reads a clock or draws randomness
(tests/test_layering.py checks the imports), so the store, the trio service
and the simulator share them unchanged.
"""
