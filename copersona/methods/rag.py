"""RAG (App. B; Salemi et al.): the user's own past reviews most relevant to the query, as examples."""

from copersona.methods.prompts import PromptMethod


class RAG(PromptMethod):
    name = "rag"
    description = "The user's retrieved past reviews (BM25 by default) as few-shot examples."
