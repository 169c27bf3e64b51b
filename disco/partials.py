"""``intermediate_saves``: which steps of an image are also saved, and under which name.

The notebook's rule (v5.7, "Extra Settings", Saving): steps are counted ``j = 0, 1, ...`` over the
steps an image runs (``steps - skip_steps`` of them; ``j`` is also what ``display_rate`` counts,
the image after its ``j + 1``-th step). A count ``N`` saves every ``steps_per_checkpoint``-th
step after the first, ``steps_per_checkpoint = max(1, (steps - skip_steps - 1) // (N + 1))``
(2 saves at about 33% and 66%); a list saves at the steps ``j`` it names. The notebook names
a count's files by the percentage ``ceil(j / (steps - skip_steps - 1) * 100)`` and a list's by
``j`` (three digits), in the folder ``partials``. No torch.
"""

from __future__ import annotations

import math

__all__ = ["PARTIALS_FOLDER", "intermediate_steps", "partial_suffix"]

PARTIALS_FOLDER = "partials"  # the notebook's partialFolder, in output_dir


def intermediate_steps(intermediate_saves: int | list[int], steps: int, skip_steps: int) -> frozenset[int]:
    """The steps ``j`` (0-based, as the module's notes count them) saved of an image that runs
    ``steps - skip_steps`` steps: for a count the notebook's ``steps_per_checkpoint`` spacing, for
    a list its members that the image reaches. Raises ``ValueError`` when ``skip_steps >= steps``."""
    run = steps - skip_steps
    if run < 1:
        raise ValueError(f"skip_steps ({skip_steps}) must be below steps ({steps})")
    if isinstance(intermediate_saves, list):
        return frozenset(j for j in intermediate_saves if 0 <= j < run)
    if not intermediate_saves:
        return frozenset()
    every = max(1, (run - 1) // (intermediate_saves + 1))
    return frozenset(range(every, run, every))


def partial_suffix(intermediate_saves: int | list[int], j: int, steps: int, skip_steps: int) -> str:
    """The end of a saved step's file name, as the notebook words it: ``NN%`` for a count
    (``ceil(j / (steps - skip_steps - 1) * 100)``, two digits at least), ``jjj`` for a list."""
    if isinstance(intermediate_saves, list):
        return f"{j:03d}"
    total = max(1, steps - skip_steps - 1)  # the notebook's total_steps (its cur_t before the first step)
    return f"{math.ceil(j / total * 100):02d}%"
