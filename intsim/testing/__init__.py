"""Public test helpers: hypothesis strategies that generate integer-op cases, corner values included.

Users drive their own hardware models with the same cases as intsim's property tests::

    from intsim.testing import strategies as ist
"""

from intsim.testing import strategies

__all__ = ["strategies"]
