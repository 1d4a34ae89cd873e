"""Every method of the harness behind one interface (:class:`Method`), found by name.

A new method is a :class:`Method` subclass registered with :func:`register`; the harness, the
CLI and the reports pick it up by its ``name`` without changes.
"""

from __future__ import annotations

from copersona.methods.base import Method, MethodInput, Resources, example_key
from copersona.methods.cfrag import CFRAG
from copersona.methods.copersona_np import CoPersonaNP
from copersona.methods.dpl import DPL
from copersona.methods.nonperso import NonPerso
from copersona.methods.pag import PAG
from copersona.methods.pat import PAT
from copersona.methods.persona_db import PersonaDBMethod
from copersona.methods.rag import RAG
from copersona.methods.rating_reference import ItemMean, RatingMF, UserMean
from copersona.methods.reference import CopyPeer, CopySelf
from copersona.methods.soft_prompted import DEP, CoPersona, CoPersonaP

METHODS: dict[str, type[Method]] = {}

# The no-LLM reference points every report of a task shows beside the methods.
REFERENCE_METHODS = {"review": ("copy-self", "copy-peer"), "rating": ("user-mean", "item-mean", "rating-mf")}
TASKS = tuple(REFERENCE_METHODS)


def register(method: type[Method]) -> type[Method]:
    """Make a method available by its name (usable as a class decorator)."""
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"a different method is already registered as {method.name!r}")
    METHODS[method.name] = method
    return method


for _method in (
    NonPerso,
    RAG,
    PAG,
    DPL,
    DEP,
    CoPersonaNP,
    CoPersonaP,
    CoPersona,
    PersonaDBMethod,
    CFRAG,
    PAT,
    CopySelf,
    CopyPeer,
    UserMean,
    ItemMean,
    RatingMF,
):
    register(_method)


def method_class(name: str) -> type[Method]:
    """The registered method called ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def create(name: str, resources: Resources) -> Method:
    return method_class(name)(resources)


__all__ = [
    "METHODS",
    "REFERENCE_METHODS",
    "TASKS",
    "Method",
    "MethodInput",
    "Resources",
    "create",
    "example_key",
    "method_class",
    "register",
]
