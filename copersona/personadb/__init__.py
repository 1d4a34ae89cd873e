"""Persona-DB (`004`): hierarchical persona refinement and collaborative refinement, kept in the store."""
