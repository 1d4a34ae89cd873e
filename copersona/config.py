"""Configuration: one dataclass per stage, defaults from the paper (App. A Table 7, App. C).

Each field carries ``help`` metadata (the CLI and ``copersona config --show`` print it). A config
file is TOML or JSON with one table per section, e.g.::

    [data]
    min_reviews_per_user = 5
    [graph]
    top_k = 5

Unknown sections or keys are an error, so a typo never silently falls back to a default. Each
field also carries its constraints (a type, and where it matters a range or a set of choices),
checked whenever a config is read or changed on the command line, with the key named in the error.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomllib
from pydantic import TypeAdapter, ValidationError


def _help(
    text: str,
    *,
    ge: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    length: int | None = None,
    min_length: int | None = None,
    after_generation: bool = False,
    **kwargs: Any,
) -> Any:
    """A setting: its help text and constraints beyond its type (``ge``/``le`` bound a number or each
    number of a list, ``choices`` a string or each string of a list, ``length``/``min_length`` a
    list's size). ``after_generation`` marks a setting that only chooses among answers already
    generated: it shapes no prompt and no training example, so a trained model's identity leaves it out."""
    given = (("ge", ge), ("le", le), ("choices", choices), ("length", length), ("min_length", min_length))
    constraints = {k: v for k, v in given if v is not None}
    marks = {"after_generation": True} if after_generation else {}
    return field(metadata={"help": text, **constraints, **marks}, **kwargs)


@dataclass
class DataConfig:
    """Filtering, pruning and splitting (App. A). Defaults: Table 7's 'Music' column (but see descriptions)."""

    min_review_length: int = _help("Minimum review text length in characters; 0 keeps all.", ge=0, default=90)
    min_description_length: int = _help(
        "Minimum item description length in characters; 0 keeps all. Items of sources that carry "
        "no description (Amazon 2014 metadata has titles only) are judged by their title. Table 7 "
        "uses 50 on Amazon 2023 descriptions; the default is 0 so that title-only sources are not "
        "cut by a rule meant for descriptions.",
        ge=0,
        default=0,
    )
    min_users_per_item: int = _help("Iterative pruning: minimum reviewers per item.", ge=1, default=3)
    min_reviews_per_user: int = _help("Iterative pruning: minimum reviews per user.", ge=1, default=5)
    holdout_k: int = _help("Most recent reviews held out as targets (at most half the history).", ge=1, default=3)
    min_profile_size: int = _help("Users with fewer profile reviews than this are dropped.", ge=1, default=4)
    max_users: int | None = _help("Keep at most this many users (first by id), after filtering.", ge=1, default=None)


@dataclass
class FacetConfig:
    """Facet schema induction (Sec. 3.1, App. C)."""

    num_facets: int = _help("Facets in the schema, M (3-6).", ge=1, default=5)
    num_clusters: int = _help("KMeans clusters of user profiles, K.", ge=1, default=8)
    profile_reviews: int = _help("Recent reviews concatenated into a user's profile text, R.", ge=1, default=8)
    profile_max_chars: int = _help("Profile text is truncated to this many characters.", ge=1, default=4000)
    top_terms: int = _help("TF-IDF terms per cluster in its evidence package.", ge=1, default=12)
    medoids_per_cluster: int = _help("Representative (medoid) users per cluster.", ge=1, default=3)
    excerpt_chars: int = _help("Characters per representative excerpt.", ge=1, default=240)
    schema_file: str | None = _help("Use this facet schema (JSON) instead of inducing one.", default=None)
    seed: int = _help("Random seed for clustering.", default=0)


@dataclass
class SummaryConfig:
    """Per-user, per-facet summaries, quotes and reliability (Sec. 3.1)."""

    summarizer: str = _help(
        "'extractive' (no generator: the user's own most facet-related sentences, reliability from "
        "the evidence) or 'abstractive' (the LLM writes summary, quotes and label, as the paper).",
        choices=("extractive", "abstractive"),
        default="extractive",
    )
    summary_reviews: int = _help("Recent reviews given to the summarizer per user.", ge=1, default=6)
    users_per_call: int = _help("Abstractive: users batched into one LLM call.", ge=1, default=8)
    max_quotes: int = _help("Supporting quotes per user and facet.", ge=0, default=2)
    quote_max_chars: int = _help("Longest quote kept, in characters.", ge=1, default=200)
    summary_sentences: int = _help("Extractive: sentences that form the facet summary.", ge=1, default=3)
    placeholder: str = _help(
        "Facet text for facets with reliability none or weak.",
        default="No explicit profile information provided.",
    )
    temperature: float = _help("Abstractive: sampling temperature.", ge=0, default=0.2)
    max_tokens: int = _help("Abstractive: token budget of one call's answer.", ge=1, default=2048)
    retries: int = _help("Abstractive: new tries when an answer fails validation.", ge=0, default=2)


@dataclass
class GraphConfig:
    """Multiplex persona graph (Sec. 3.2, App. C)."""

    top_k: int = _help("Neighbours kept per user and facet.", ge=1, default=5)
    min_similarity: float = _help("Edges need at least this cosine similarity.", ge=0, le=1, default=0.35)
    reliability_weights: list[float] = _help(
        "omega(r) for r = none, weak, moderate, strong; multiplies both ends' similarity.",
        ge=0,
        le=1,
        length=4,
        default_factory=lambda: [0.05, 0.25, 0.60, 0.95],
    )
    placeholder_edges: bool = _help(
        "Link users whose facet text is the neutral placeholder. Off: placeholders are one identical "
        "text (cosine 1 with each other), so their edges would say nothing about the users; such users "
        "are left out of that facet's layer and find peers through their other facets (Sec. 3.2).",
        default=False,
    )
    persona_weight: float = _help(
        "lambda: weight of the whole-persona layer (profile embedding and writing style) in a pair's "
        "combined similarity, (1 - lambda) * mean facet weight + lambda * persona weight. 0 is the "
        "paper's rule (facet layers only; no such layer is built). 0.5 was chosen on validation "
        "(README, 'Which graph finds the better peers').",
        ge=0,
        le=1,
        default=0.5,
    )
    style_scale: float = _help(
        "s: the writing-style block's scale beside the unit profile embedding in the whole-persona "
        "vector (0: topic only). 0.5 was chosen on validation with persona_weight.",
        ge=0,
        default=0.5,
    )
    exact_max_users: int = _help(
        "Exact search up to this many users; a faiss inverted file (8-bit codes) above.", ge=0, default=20000
    )
    candidate_factor: int = _help("Approximate search: candidates fetched per neighbour kept.", ge=1, default=4)
    ivf_lists: int = _help(
        "Approximate search: inverted lists; 0 picks a power of two near 4 sqrt(users), at most users / 128.",
        ge=0,
        default=0,
    )
    ivf_probes: int = _help(
        "Approximate search: lists scanned per query; 0 picks max(8, lists / 256).", ge=0, default=0
    )


class _TopLevel:
    """A whole config (a dataclass of sections): to and from plain dicts, errors named by ``where``."""

    where: str

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, raw: dict):
        config = _from_dict(cls, raw, cls.where)
        config.validate()
        return config

    def validate(self) -> None:
        """Every setting's type and constraints; the first violation is a ``ValueError`` naming its key.

        Called when a config is read; call it again after changing settings in code (the CLI does).
        """
        _validate(self, self.where)


@dataclass
class BuildConfig(_TopLevel):
    """Everything the offline build needs."""

    where = "config"

    llm: str = _help("LLM spec: 'smollm2', 'llamacpp:PATH.gguf', 'openai:MODEL@URL', 'hf:PATH'.", default="smollm2")
    embedder: str = _help("Embedder spec: 'minilm' or 'st:NAME_OR_PATH'.", default="minilm")
    data: DataConfig = field(default_factory=DataConfig)
    facets: FacetConfig = field(default_factory=FacetConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)

    @classmethod
    def load(cls, path: str | Path) -> BuildConfig:
        """The build sections of a config file (``[harness]``, ``[training]``, ``[serve]`` and ``[rec]``
        have their own classes)."""
        raw = _read(path)
        for other in ("harness", "training", "serve", "rec"):
            raw.pop(other, None)
        return cls.from_dict(raw)


def _read(path: str | Path) -> dict:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {err}") from err


@dataclass
class RetrievalConfig:
    """Self-history retrieval and peer selection at inference (Sec. 3.3-3.4, App. C)."""

    retriever: str = _help(
        "Self-history retriever: 'bm25' (the paper's), 'dense' (embedder) or 'recency'.",
        choices=("bm25", "dense", "recency"),
        default="bm25",
    )
    history_k: int = _help(
        "Retrieved units in the prompt: own past reviews (Persona-DB: persona units across its levels).",
        ge=0,
        default=4,
    )
    neighbours: int = _help("Peers in the facet peer context, by combined similarity (0 disables it).", ge=0, default=3)


PEER_CUTOFFS = ("before-target", "none")
PEER_WORDS = ("verbatim", "none")
WITHOUT_EDGES = ("item", "none")


@dataclass
class PeersConfig:
    """What other users' evidence may reach a request's input (time and item integrity).

    Evidence is dated by day: evidence written on the target's day counts as not before it.
    """

    cutoff: str = _help(
        "'before-target': a request for a target written at day t uses only peer evidence (summaries, "
        "quotes, copied reviews, DPL's representatives) written before day t; 'none': any evidence. "
        "Live requests (a new item) are dated now.",
        choices=PEER_CUTOFFS,
        default="before-target",
    )
    same_item: bool = _help(
        "Allow a peer's own review of the target item to reach the input (false: never).", default=False
    )
    quotes: str = _help(
        "'verbatim': peers' quotes and extractive summaries (their own sentences) may reach an input; "
        "'none': no other user's words reach an input or an API response: peer packages keep only "
        "model-written (abstractive) summaries, so an extractive build has no peer context; copy-peer "
        "and DPL, which show peers' reviews, are refused; the persona API leaves out quotes and "
        "extractive summaries.",
        choices=PEER_WORDS,
        default="verbatim",
    )
    without_edges: str = _help(
        "A request whose user has no edges (no profile reviews, or too little evidence for any facet): "
        "'item': its peers are the users whose facet texts are nearest the target item's metadata (with the "
        "review's title and rating where the task gives them), on every layer; 'none': no peers.",
        choices=WITHOUT_EDGES,
        default="item",
    )


@dataclass
class BudgetConfig:
    """Token budgets per prompt component (App. C), in the generator's own tokens.

    The paper's numbers assume an 8,192-token window; they are scaled by the generator's window
    (minus the answer's room) over ``reference_window``, never up.
    """

    total: int = _help("Whole prompt.", ge=1, default=8192)
    per_review: int = _help("One retrieved review.", ge=0, default=1024)
    history: int = _help("All retrieved reviews (and profile text) together.", ge=0, default=1024)
    per_peer_facet: int = _help("One neighbour's facet package (summary and quotes).", ge=0, default=512)
    context_share: float = _help(
        "Share of the prompt budget left after the system text and the query that a method's own "
        "context (peers, profiles) is guaranteed: history is placed first, within the rest, and the "
        "context then takes what is left. It binds only at small windows; 0 lets history take all.",
        ge=0,
        le=1,
        default=0.5,
    )
    reference_window: int = _help("The window the budgets above were written for.", ge=1, default=8192)


@dataclass
class GenerationConfig:
    """Decoding (Sec. 4, Fig. 3)."""

    temperature: float = _help("Sampling temperature.", ge=0, default=0.8)
    seed: int = _help("Sampling seed (part of the cache key).", default=0)
    max_new_tokens: int = _help("Longest answer in tokens.", ge=1, default=256)
    min_new_tokens: int = _help("Answer room never goes below this many tokens.", ge=1, default=32)
    tokens_per_target_word: float = _help(
        "Answer room per word of the target length (the user's median review length): tokens per "
        "word plus headroom, so a typical review is not cut.",
        ge=0,
        default=2.0,
    )
    batch_size: int = _help(
        "Requests sent to the backend together (HTTP backends run them concurrently).", ge=1, default=8
    )


@dataclass
class MethodsConfig:
    """Settings of individual methods (App. B)."""

    pag_profile_sentences: int = _help("PAG: sentences in the extractive user profile.", ge=1, default=3)
    dpl_clusters: int = _help(
        "DPL: KMeans clusters of user profiles; their medoids are the representatives.", ge=1, default=8
    )
    dpl_compare: int = _help(
        "DPL: representatives (nearest in profile space) a user is contrasted with.", ge=1, default=3
    )
    dpl_terms: int = _help("DPL: distinctive terms listed in the semantic difference.", ge=1, default=8)
    profile_writer: str = _help(
        "Who writes PAG's profile and DPL's difference profile: 'extractive' (computed from the "
        "reviews, no LLM; a 135M generator cannot summarize) or 'llm' (the generator writes them, as "
        "the papers; cached in the store).",
        choices=("extractive", "llm"),
        default="extractive",
    )
    copersona_answer: str = _help(
        "CoPersona's review answer: 'select' (the user's own most relevant past review or the generated answer, "
        "each opened by the request's review title, chosen by a persona scorer: mean ROUGE-1 against the user's "
        "other reviews; see copersona/methods/selection.py) or 'generated' (the generator's answer as it is, the "
        "paper's). Chosen on validation (README).",
        choices=("select", "generated"),
        default="select",
        after_generation=True,
    )
    copersona_select_margin: float = _help(
        "With copersona_answer = 'select': how much higher (ROUGE-1 F, 0-1) the generated answer's persona score "
        "must be than the retrieved review's to replace it (0.1, chosen on validation pooled over sampling seeds and "
        "data sets: scripts/choose_margin.py; 0 = the closer one wins, 1 = never the generated one).",
        ge=0,
        le=1,
        default=0.1,
        after_generation=True,
    )
    persona_db_refiner: str = _help(
        "Persona-DB: who refines histories into distilled facts, induced traits and persona keys: "
        "'extractive' (the reviews' own sentences, clustering and TF-IDF keys; no LLM) or 'llm' (the "
        "generator, as the paper; JSON under a schema, cached, with counted extractive fallbacks).",
        choices=("extractive", "llm"),
        default="extractive",
    )
    persona_db_keys: int = _help("Persona-DB: persona keys per user (what users are joined on).", ge=1, default=5)
    persona_db_neighbor_topk: int = _help(
        "Persona-DB: collaborators joined to a user by shared persona keys (the public code's "
        "neighbor_topk); 0 turns collaborative refinement off.",
        ge=0,
        default=3,
    )
    persona_db_item_topk_collab: int = _help(
        "Persona-DB: each collaborator's distilled reviews (of the items most similar to the query) "
        "offered (the public code's item_topk_collab).",
        ge=0,
        default=2,
    )
    pat_rounds: int = _help(
        "PAT: rounds of dual reasoning (each rewrites the draft against the style cues, then revises it against "
        "the topic context); 0 is a plain prompt with both trajectories.",
        ge=0,
        default=1,
    )
    pat_style_users: int = _help("PAT: users writing most like the user, lending style cues.", ge=0, default=2)
    pat_topic_reviews: int = _help(
        "PAT: other users' reviews of the items most like the target (preference-aligned first).", ge=0, default=3
    )
    cfrag_users: int = _help("CFRAG: similar users retrieved by the trained user embedding.", ge=0, default=4)
    cfrag_documents: int = _help(
        "CFRAG: reviews placed from the similar users, after BM25 retrieval and preference re-ranking.", ge=0, default=3
    )
    cfrag_preference: float = _help(
        "CFRAG: weight of the user's preference (cosine of a review to the user's embedded reviews) against "
        "query relevance (BM25, scaled to the best) when re-ranking peers' reviews.",
        ge=0,
        le=1,
        default=0.5,
    )
    cfrag_dim: int = _help("CFRAG: the user encoder's output dimension.", ge=8, default=128)
    cfrag_epochs: int = _help("CFRAG: contrastive training epochs of the user encoder.", ge=1, default=60)
    cfrag_temperature: float = _help("CFRAG: InfoNCE temperature.", ge=0.01, default=0.1)
    rating_mf_factors: int = _help("rating-mf: latent factors of the biased matrix factorization.", ge=1, default=16)
    rating_mf_epochs: int = _help("rating-mf: full-batch Adam steps.", ge=1, default=300)
    rating_mf_reg: float = _help("rating-mf: L2 weight on factors and biases.", ge=0, default=0.05)
    rating_mf_blocks: int = _help(
        "rating-mf: the examples are cut into this many blocks by target day, and one model is fitted "
        "per block on the ratings written before the block's first day (nothing later reaches it).",
        ge=1,
        default=8,
    )


@dataclass
class EvaluationConfig:
    """Metrics and statistics (Sec. 4.1)."""

    metrics: list[str] = _help(
        "Metrics computed: rouge1, rougeL, meteor, bleu, bertscore.",
        choices=("rouge1", "rougeL", "meteor", "bleu", "bertscore"),
        min_length=1,
        default_factory=lambda: ["rouge1", "rougeL", "meteor", "bleu", "bertscore"],
    )
    bertscore_model: str = _help(
        "BERTScore encoder: 'minilm' (the packaged MiniLM) or a local Hugging Face path. The papers "
        "use led-base-16384; scores on another encoder are not comparable with theirs.",
        default="minilm",
    )
    bertscore_layer: int = _help("BERTScore: the encoder layer whose token embeddings are matched.", ge=1, default=4)
    resamples: int = _help("Bootstrap resamples for intervals and paired tests.", ge=1, default=1000)
    seed: int = _help("Seed of the bootstrap.", default=0)


@dataclass
class HarnessConfig(_TopLevel):
    """Inference and evaluation: what every method shares (the ``[harness]`` table of a config file)."""

    where = "harness"

    llm: str | None = _help("Generator spec; default: the store's build LLM.", default=None)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @classmethod
    def load(cls, path: str | Path) -> HarnessConfig:
        return cls.from_dict(_read(path).get("harness", {}))

    def input_settings(self) -> dict:
        """The settings that can shape a method's input, and so its training examples (a trained model's
        identity): all but the evaluation's and the methods' after-generation settings."""
        settings = self.to_dict()
        del settings["evaluation"]
        methods = settings["methods"]
        settings["methods"] = {
            f.name: methods[f.name] for f in fields(MethodsConfig) if "after_generation" not in f.metadata
        }
        return settings


def _from_dict(cls: type, raw: dict, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        if hasattr(default, "__dataclass_fields__"):
            values[name] = _from_dict(type(default), value, f"{where}.{name}")
        else:
            values[name] = value
    return cls(**values)


def _validate(section: Any, where: str) -> None:
    hints = typing.get_type_hints(type(section))
    for f in fields(section):
        key, value = f"{where}.{f.name}", getattr(section, f.name)
        if is_dataclass(value):
            _validate(value, key)
            continue
        try:
            TypeAdapter(hints[f.name]).validate_python(value, strict=True)
        except ValidationError:
            raise ValueError(f"{key}: expected {_type_name(hints[f.name])}, got {value!r}") from None
        _check_constraints(key, value, f.metadata)


def _check_constraints(key: str, value: Any, rules: Mapping[str, Any]) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    if "length" in rules and len(items) != rules["length"]:
        raise ValueError(f"{key}: expected {rules['length']} values, got {len(items)}")
    if "min_length" in rules and len(items) < rules["min_length"]:
        raise ValueError(f"{key}: expected at least {rules['min_length']} value(s), got {len(items)}")
    for item in items:
        if "choices" in rules and item not in rules["choices"]:
            raise ValueError(f"{key}: {item!r} is not one of {', '.join(rules['choices'])}")
        if "ge" in rules and item < rules["ge"] or "le" in rules and item > rules["le"]:
            bounds = [
                f"at least {rules['ge']}" if "ge" in rules else "",
                f"at most {rules['le']}" if "le" in rules else "",
            ]
            raise ValueError(f"{key}: {item!r} is out of range (it must be {' and '.join(b for b in bounds if b)})")


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return " or ".join(_type_name(a) for a in args) if args else str(hint)


def describe(cls: type = BuildConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, default, help) for every field, for documentation and the CLI."""
    rows = []
    instance = cls()
    for f in fields(cls):
        value = getattr(instance, f.name)
        if hasattr(value, "__dataclass_fields__"):
            rows.extend(describe(type(value), f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return rows


@dataclass
class LoraSettings:
    """The LoRA adapter on the generator (App. C: rank 16, alpha 32, dropout 0.05)."""

    rank: int = _help("LoRA rank r.", ge=1, default=16)
    alpha: int = _help("LoRA alpha (updates are scaled by alpha / r).", ge=1, default=32)
    dropout: float = _help("Dropout on the LoRA input.", ge=0, le=1, default=0.05)
    target_modules: list[str] = _help(
        "Linear layers that get an adapter (all attention and MLP projections of a llama-style model).",
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )


@dataclass
class PersonalizerSettings:
    """The parametric branch: gated graph encoder and soft-prompt projector (Sec. 3.3, App. C)."""

    soft_prompt_length: int = _help("Virtual tokens L prepended to the input.", ge=1, default=20)
    projector_hidden: int = _help("Projector: Linear(d_in -> this) + Tanh + Linear(this -> L x H).", ge=1, default=512)
    encoder_hidden: int = _help("Graph encoder hidden size per facet.", ge=1, default=512)
    encoder_dropout: float = _help("Graph encoder dropout.", ge=0, le=1, default=0.1)
    attention_heads: int = _help("Heads of the cross-facet self-attention.", ge=1, default=4)
    graph_neighbours: int = _help(
        "User-level neighbours N_u of Eq. 10, by cosine of the anchor embeddings (mean of observed facets).",
        ge=0,
        default=5,
    )
    gate: str = _help(
        "Reliability gate: 'shared' across facets (the paper's) or 'per-facet'.",
        choices=("shared", "per-facet"),
        default="shared",
    )


@dataclass
class GRPOSettings:
    """Reinforcement learning with GRPO (``copersona train --algorithm grpo``; PAT's policy optimisation)."""

    generations: int = _help("Answers sampled per prompt (GRPO's group).", ge=2, default=4)
    max_completion_tokens: int = _help("Longest sampled answer, in tokens.", ge=1, default=128)
    temperature: float = _help("Sampling temperature of the group's answers.", ge=0.01, default=0.9)
    beta: float = _help("KL penalty toward the base model.", ge=0, default=0.04)
    length_penalty: float = _help(
        "Reward penalty per unit of |log(answer words / target words)| (answers far from the target's length).",
        ge=0,
        default=0.1,
    )


@dataclass
class OptimizerSettings:
    """AdamW with a cosine schedule (App. C)."""

    learning_rate: float = _help("Peak learning rate.", ge=0, default=2e-5)
    weight_decay: float = _help("AdamW weight decay.", ge=0, default=0.01)
    betas: list[float] = _help("AdamW betas.", ge=0, le=1, length=2, default_factory=lambda: [0.9, 0.98])
    warmup_ratio: float = _help("Share of the steps spent warming up linearly.", ge=0, le=1, default=0.06)
    max_grad_norm: float = _help("Gradient clipping norm.", ge=0, default=1.0)


@dataclass
class TrainingConfig(_TopLevel):
    """Fine-tuning the generator and the personalizer (the ``[training]`` table of a config file).

    The defaults are the paper's; CPU runs shorten ``steps`` and ``max_length`` (see
    ``configs/amazon2014-mi-train-cpu.toml``).
    """

    where = "training"

    steps: int = _help("Optimizer steps.", ge=1, default=1000)
    batch_size: int = _help("Examples per optimizer step.", ge=1, default=8)
    micro_batch_size: int = _help(
        "Examples per forward pass; batch_size / micro_batch_size passes accumulate gradients.", ge=1, default=1
    )
    max_length: int = _help(
        "Token window of a training example (prompt and target). Prompts are built for this window "
        "and fine-tuned generation uses the same one, so training and inference inputs match.",
        ge=8,
        default=2048,
    )
    train_examples: int | None = _help(
        "Cap on training examples (held-out train targets first, then earlier profile reviews); none: all.",
        ge=1,
        default=None,
    )
    validation_examples: int = _help("Validation examples scored for the loss curve.", ge=0, default=64)
    eval_every: int = _help("Steps between validation losses (and checkpoints).", ge=1, default=50)
    seed: int = _help("Seed of initialization, data order and dropout.", default=0)
    device: str = _help("'auto' (CUDA when present), 'cpu' or 'cuda:N'.", default="auto")
    dtype: str = _help("'auto' (float32 on CPU, bfloat16/float16 on GPU) or a torch dtype name.", default="auto")
    lora: LoraSettings = field(default_factory=LoraSettings)
    personalizer: PersonalizerSettings = field(default_factory=PersonalizerSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        return cls.from_dict(_read(path).get("training", {}))


@dataclass
class ServeConfig(_TopLevel):
    """The HTTP service (the ``[serve]`` table); what it answers with is the ``[harness]`` table."""

    where = "serve"

    max_concurrent_per_key: int = _help(
        "Requests one API key may have in flight; more are refused with 429.", ge=1, default=4
    )
    max_request_bytes: int = _help("Largest request body accepted; larger ones get 413.", ge=1024, default=1_000_000)
    max_tokens: int = _help("Most tokens one answer may ask for (a request's max_tokens is capped).", ge=1, default=512)
    page_size: int = _help("Users per page of GET /v1/users at most.", ge=1, default=100)

    @classmethod
    def load(cls, path: str | Path) -> ServeConfig:
        return cls.from_dict(_read(path).get("serve", {}))
