"""Golden vectors for RTL verification (numpy + numba only; no torch). User documentation: ``docs/golden.md``.

Modules: :mod:`~intsim.golden.formats` (npy / ``$readmemh`` hex / packed binary writers and readers),
:mod:`~intsim.golden.manifest` (``manifest.json`` and its shipped JSON schema), :mod:`~intsim.golden.tree` (atomic
tree writing), :mod:`~intsim.golden.writer` (``intsim golden``), :mod:`~intsim.golden.diff` (``intsim diff``),
:mod:`~intsim.golden.report` (``intsim report``: accumulator widths and saturation counts),
:mod:`~intsim.golden.cases` and :mod:`~intsim.golden.vectors` (``intsim vectors``: op-level suites),
:mod:`~intsim.golden.ties` (hand-built integer Programs whose requantizations hit exact ties, one per rounding
mode), :mod:`~intsim.golden.cli` (the four subcommands). The committed regression set is ``golden/``, rebuilt by
``tools/make_golden.py`` from the committed Program ``golden/programs/digits-fqvit-w8a8a4.intsim`` (integer only).
"""
