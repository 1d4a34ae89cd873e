"""Methods whose input starts with a trained soft prompt (Sec. 3.3-3.4, App. B's DEP, Table 5).

Their text input is another method's; the harness puts the user's cached soft prompt in front of
it, so these classes only name which text and which personalizer. They answer the review task
only: their personalizers are trained on reviews, and a rating read through a soft prompt would
fall back to constrained output (llama.cpp scores choices without one).
"""

from __future__ import annotations

from copersona.methods.copersona_np import CoPersonaNP
from copersona.methods.rag import RAG


class CoPersona(CoPersonaNP):
    name = "copersona"
    description = "Both branches: BM25 history + facet peer exemplars, after the gated-graph soft prompt."
    soft_prompt = "persona"
    tasks = ("review",)


class CoPersonaP(RAG):
    name = "copersona-p"
    description = "CoPersona without the non-parametric branch: gated-graph soft prompt + BM25 history."
    role = "ours"
    soft_prompt = "persona"
    tasks = ("review",)


class DEP(RAG):
    name = "dep"
    description = "DEP: soft prompt of the user's review embedding against their peers' + BM25 history."
    soft_prompt = "difference"
    tasks = ("review",)
