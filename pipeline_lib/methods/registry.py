"""Which evaluated rows a config's ``methods`` list produces.

Every trained method is evaluated twice through the same prediction path: with its trained weights
(``<method>``) and with the weights it started from (``<method>@init``, saved by its train stage as
``init.pt`` before the first optimisation step), so every result table shows what training bought.
``gaur_hpf``'s starting point is the ImageNet encoder, i.e. the ``hpf`` row of the same table.
"""

from __future__ import annotations

from typing import Iterable

# Methods with a train stage that writes <backbone>/<method>/{init,model}.pt.
TRAINED_METHODS = ("siamese", "sfnet", "cnngeometric", "weakalign", "fcss")
INIT_SUFFIX = "@init"


def evaluated_methods(methods: Iterable[str]) -> list[str]:
    """The rows of the result table, in order: each trained method followed by its ``@init`` row."""
    out: list[str] = []
    for m in methods:
        out.append(m)
        if m in TRAINED_METHODS:
            out.append(m + INIT_SUFFIX)
    return list(dict.fromkeys(out))


def base_method(row_method: str) -> str:
    """``siamese@init`` -> ``siamese``; other names unchanged."""
    return row_method[: -len(INIT_SUFFIX)] if row_method.endswith(INIT_SUFFIX) else row_method


__all__ = ["TRAINED_METHODS", "INIT_SUFFIX", "evaluated_methods", "base_method"]
