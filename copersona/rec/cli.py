"""``copersona rec``: the recommendation task's commands (thin shells over ``copersona.rec``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

rec_app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="PERSONA4REC: persona-indexed reranking of collaborative-filtering candidates.",
)

ConfigOption = Annotated[Optional[Path], typer.Option(help="Config file; its [rec] table (see `copersona config`).")]

# The main CLI imports this module at its end, once these options exist; rec_app is defined above
# for the other order (this module imported first).
from copersona.cli import EngineOption, RayAddressOption  # noqa: E402


def _config(path: Optional[Path], **overrides):
    from copersona.rec.config import RecConfig

    config = RecConfig.load(path) if path else RecConfig()
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    config.validate()
    return config


def _encoders(db, config, finetuned: Optional[Path], use_finetuned: bool):
    """The vanilla encoder and the fine-tuned one (``--finetuned`` or the one `rec train` registered)."""
    from copersona.backends.embed import SentenceTransformerEmbedder, load_embedder
    from copersona.rec.profiles import CachedEncoder

    vanilla = CachedEncoder(load_embedder(config.embedder), db)
    if not use_finetuned:
        return vanilla, None
    record = None
    if finetuned is not None:
        path = finetuned / "training.json"
        if not path.exists():
            raise FileNotFoundError(f"{finetuned}: no training.json (a folder written by `copersona rec train`)")
        record = json.loads(path.read_text()) | {"path": str(finetuned / "encoder")}
    else:
        record = db.get_meta("rec_finetuned")
    if record is None:
        return vanilla, None
    embedder = SentenceTransformerEmbedder(record["path"], model_id=record["encoder_id"])
    return vanilla, CachedEncoder(embedder, db)


@rec_app.command()
def index(
    data: Annotated[Path, typer.Argument(help="Ratings and/or review files (a file or a folder), with item metadata.")],
    store: Annotated[str, typer.Option(help="The store, created or resumed: a SQLite file or a postgresql:// URL.")],
    config: ConfigOption = None,
    meta: Annotated[Optional[Path], typer.Option(help="Item metadata file, if not in the data folder.")] = None,
    llm: Annotated[
        Optional[str], typer.Option(help="Reason with this LLM (openai:MODEL@URL, smollm2, ...); default: extractive.")
    ] = None,
    embedder: Annotated[Optional[str], typer.Option(help="Encoder spec: minilm or st:NAME_OR_PATH.")] = None,
    limit_users: Annotated[Optional[int], typer.Option(min=1, help="Keep at most N users (first by id).")] = None,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Offline stages: interactions and split, CF candidates, summaries, aspects, personas, alignment (resumable).

    With --engine ray the item summaries and aspect tuples run in Ray actors."""
    from contextlib import closing

    from rich.table import Table

    from copersona.cli import RichProgress, console
    from copersona.engines import open_engine
    from copersona.rec.index import RecIndex
    from copersona.store.rec import RecStore

    settings = _config(config, llm=llm, embedder=embedder, max_users=limit_users)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data file or folder")
    with RecStore(store) as db, closing(open_engine(engine, ray_address)) as runs_on:
        stages = RecIndex.of(db, settings, RichProgress(), runs_on).run(data, meta=meta)
    table = Table(title=f"rec index of {store}")
    for column in ("stage", "seconds", "details"):
        table.add_column(column)
    for name, run in stages.items():
        brief = {k: v for k, v in run.details.items() if k not in ("seconds", "reports")}
        table.add_row(name, f"{run.details.get('seconds', 0):.1f}", json.dumps(brief)[:200])
    console.print(table)


@rec_app.command()
def train(
    store: Annotated[str, typer.Argument(help="A store indexed by `copersona rec index` (file or postgresql:// URL).")],
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned encoder and training.json.")],
    config: ConfigOption = None,
    register: Annotated[bool, typer.Option(help="Make `rec evaluate` and `rec recommend` use this encoder.")] = True,
) -> None:
    """Fine-tune the encoder (LoRA, InfoNCE with in-batch negatives) on the aligned user-persona pairs."""
    from copersona.cli import RichProgress, console, writable_folder
    from copersona.rec.encoder import train as train_encoder
    from copersona.store.rec import RecStore

    settings = _config(config)
    writable_folder(out)
    with RecStore(store, create=False) as db:
        record = train_encoder(db, settings, out, RichProgress())
        if register:
            db.set_meta("rec_finetuned", {"path": str((out / "encoder").resolve()), "encoder_id": record["encoder_id"]})
    scores = ", ".join(f"{h['epoch']}: {h['validation_ndcg@10']:.4f}" for h in record["history"])
    console.print(
        f"trained {record['encoder_id']} on {record['pairs']} pairs in {record['seconds'] / 60:.1f} min; "
        f"validation NDCG@10 by epoch ({scores}); kept epoch {record['kept_epoch']}"
    )


@rec_app.command()
def evaluate(
    store: Annotated[str, typer.Argument(help="A store indexed by `copersona rec index` (file or postgresql:// URL).")],
    out: Annotated[Path, typer.Option(help="Folder for results.json, results.csv, report.md, metrics.png.")],
    config: ConfigOption = None,
    finetuned: Annotated[
        Optional[Path], typer.Option(help="A `rec train` folder (default: the encoder `rec train` registered).")
    ] = None,
    use_finetuned: Annotated[bool, typer.Option("--use-finetuned/--vanilla-only", help="Add fine-tuned rows.")] = True,
) -> None:
    """HR, MRR, NDCG at 5/10/20 of each generator alone and reranked, with intervals and segments."""
    from copersona.cli import RichProgress, _out, writable_folder
    from copersona.rec.evaluate import evaluate as run_evaluation
    from copersona.rec.evaluate import markdown
    from copersona.rec.rerank import all_rerankers
    from copersona.store.rec import RecStore

    settings = _config(config)
    writable_folder(out)
    with RecStore(store, read_only=True) as db:
        vanilla, tuned = _encoders(db, settings, finetuned, use_finetuned)
    with RecStore(store, create=False) as db:  # the encoders cache vectors in the store
        vanilla.store = db
        if tuned is not None:
            tuned.store = db
        rerankers = all_rerankers(db, settings, vanilla, tuned)
        results = run_evaluation(
            db, rerankers, out, resamples=settings.bootstrap, seed=settings.seed, progress=RichProgress()
        )
        persona_rows = [r for r in results["rows"] if r["reranker"] in ("persona4rec", "persona4rec-ft")]
        db.set_meta("rec_gamma", {r["encoder"]: r["chosen"]["gamma"] for r in persona_rows})
    _out().print(markdown(results))


@rec_app.command()
def recommend(
    store: Annotated[str, typer.Argument(help="A store indexed by `copersona rec index` (file or postgresql:// URL).")],
    user: Annotated[str, typer.Option(help="The user to recommend for.")],
    config: ConfigOption = None,
    generator: Annotated[str, typer.Option(help="The first-stage generator whose candidates are reranked.")] = "bpr",
    explain: Annotated[bool, typer.Option(help="Show each item's winning persona: description and rationale.")] = False,
    top: Annotated[int, typer.Option(min=1, help="Items shown.")] = 10,
    use_finetuned: Annotated[bool, typer.Option("--use-finetuned/--vanilla", help="The fine-tuned encoder.")] = True,
) -> None:
    """The user's candidates reranked by their personas, each with the persona that won it."""
    from rich.table import Table

    from copersona.cli import _out
    from copersona.rec.profiles import training_profiles
    from copersona.rec.rerank import PersonaIndex, PersonaReranker
    from copersona.store.rec import RecStore

    settings = _config(config)
    with RecStore(store, create=False) as db:
        vanilla, tuned = _encoders(db, settings, None, use_finetuned)
        found = [c for c in db.candidates(generator, "test") if c.user_id == user]
        if not found:
            known = ", ".join(db.generators()) or "none"
            raise ValueError(
                f"no {generator} candidates for user {user!r} (generators: {known}; users need 2+ interactions)"
            )
        encoder = tuned or vanilla
        reranker = PersonaReranker(
            "persona4rec-ft" if tuned else "persona4rec",
            PersonaIndex.build(db.items(), db.personas(), encoder),
            training_profiles(db, settings.history_length),
            encoder,
            settings.decay_grid,
        )
        gamma = db.get_meta("rec_gamma", {}).get(reranker.encoder_id)
        if gamma is None:  # not evaluated yet: choose it on validation now
            validation = [c for g in db.generators() for c in db.candidates(g, "validation")]
            gamma = reranker.prepare(validation)["gamma"]
        else:
            reranker.use_gamma(gamma)
        items = db.items()
        ranked = reranker.rerank(found[0])[:top]
    table = Table(
        title=f"{user}: {generator} candidates reranked by {reranker.name} ({reranker.encoder_id}, gamma {gamma})"
    )
    for column in ("rank", "item", "score", "persona") + (("why",) if explain else ()):
        table.add_column(column)
    for position, r in enumerate(ranked, 1):
        persona = r.persona.name if r.persona else "(item summary)"
        row = [str(position), items[r.item_id].title[:60] or r.item_id, f"{r.score:.3f}", persona]
        if explain:
            row.append(f"{r.persona.description}\n{r.persona.rationale}" if r.persona else items[r.item_id].summary)
        table.add_row(*row)
    _out().print(table)
