"""Recommendation: PERSONA4REC (paper 003) on CoPersona's store, backends and CLI (``copersona rec``).

The offline stages (``index``) load interactions and split them leave-one-out by time, fit the
first-stage CF generators (``candidates``), reason over items (``reasoning``: summaries, aspect
tuples, personas, alignment; extractive or with an LLM) and store every record (``store.rec``).
``encoder`` fine-tunes the user-persona encoder; ``rerank`` holds the persona index and the
rerankers (``copersona`` adds CoPersona's facet and peer variants); ``evaluate`` scores every
(generator, reranker) row with ``metrics``.
"""
