"""Non-Perso (App. B): item information, the target rating and review title; nothing about the user."""

from copersona.methods.prompts import PromptMethod


class NonPerso(PromptMethod):
    name = "nonperso"
    description = "No personalization: item, rating and review title only (the lower bound)."
    personal = False
    retrieves_history = False
