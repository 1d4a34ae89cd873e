"""What a request retrieves: the user's own history (BM25, dense, recency), peers' facet packages, budgets."""

from copersona.retrieval.budget import TokenBudget, Truncation
from copersona.retrieval.cutoff import DroppedText, EvidenceCutoff
from copersona.retrieval.history import RETRIEVERS, HistoryRetriever, load_retriever, query_text
from copersona.retrieval.peers import FacetPeers, PeerExemplar, PeerIndex

__all__ = [
    "RETRIEVERS",
    "DroppedText",
    "EvidenceCutoff",
    "FacetPeers",
    "HistoryRetriever",
    "PeerExemplar",
    "PeerIndex",
    "TokenBudget",
    "Truncation",
    "load_retriever",
    "query_text",
]
