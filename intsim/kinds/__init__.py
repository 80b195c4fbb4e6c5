"""The op kinds of the Program vocabulary: one :class:`OpKind` per kind, in one registry.

Each kind's module (:mod:`intsim.kinds.movement`, :mod:`~intsim.kinds.linear`, :mod:`~intsim.kinds.normalization`,
:mod:`~intsim.kinds.attention`, :mod:`~intsim.kinds.logquant`) holds its whole description: schema (operands, attributes, rule), executor, the
``intsim.ops`` function it runs and the intermediates of the accumulator report. :mod:`intsim.kinds.registry`
collects them; see ``docs/program.md`` (Op kinds, Versioning) for the table and the rules.

    >>> from intsim.kinds import get_op_kind
    >>> get_op_kind("LisAttentionValues").function
    'lis_attention_values'
"""

from intsim.kinds.base import OpKind, kind_string, parse_kind
from intsim.kinds.registry import (
    BUILTIN_KINDS,
    OP_KINDS,
    check_op,
    get_op_kind,
    markdown_table,
    op_kinds,
    register_op_kind,
    registered_op_kind,
    unregister_op_kind,
)

__all__ = ["BUILTIN_KINDS", "OP_KINDS", "OpKind", "check_op", "get_op_kind", "kind_string", "markdown_table",
           "op_kinds", "parse_kind", "register_op_kind", "registered_op_kind", "unregister_op_kind"]
