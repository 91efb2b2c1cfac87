"""The SHARP algorithm, read next to SPEC §2–§5: memory layers, heads and the learner.

Imports only :mod:`sharp.config`, :mod:`sharp.protocol` and :mod:`sharp.engines`.
"""
