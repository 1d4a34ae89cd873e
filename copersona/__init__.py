"""CoPersona: collaborative persona graphs for LLM personalization."""

__version__ = "0.1.0"
