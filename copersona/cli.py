"""The command line: thin shells over the library, with progress bars and readable output."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from copersona.config import BuildConfig, HarnessConfig, TrainingConfig, describe

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: "[harness]" is a config table, not markup
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="CoPersona: collaborative persona graphs.",
)
# Nothing from data, paths or models is read as console markup (reviews contain brackets): every
# console prints plain text, and styles are given as styles, never as markup in the text.
console = Console(stderr=True, markup=False)
EngineOption = Annotated[
    str,
    typer.Option(help="Where per-user work runs: local (this process) or ray (Ray Data actor pools)."),
]
RayAddressOption = Annotated[
    Optional[str], typer.Option(help="A Ray cluster to join (with --engine ray); default: start a local Ray.")
]
StoreArgument = Annotated[
    str, typer.Argument(help="A store written by `copersona build`: a SQLite file or a postgresql:// URL.")
]


def _out() -> Console:
    """The stdout console (reports, tables); stderr carries progress and errors."""
    return Console(markup=False)


class RichProgress:
    """Build progress as rich bars on stderr (stdout stays clean for --json)."""

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        columns = [
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}", markup=False),
        ]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(name, total=total, status="")

            def advance(n: int, status: str | None = None) -> None:
                bar.update(task, advance=n, **({"status": status} if status is not None else {}))

            yield advance

    def message(self, text: str) -> None:
        console.print(text, style="dim")


def writable_folder(path: Path) -> None:
    """``path`` is a folder, or can become one, that this user may write: checked before long work."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: a file, not a folder for results")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(f"{path}: cannot be written here ({existing} is not a writable folder)")


def _config(
    path: Optional[Path],
    llm: Optional[str],
    embedder: Optional[str],
    summarizer: Optional[str],
    limit_users: Optional[int],
) -> BuildConfig:
    """The config file's settings with the command line's on top (``--limit-users`` is ``data.max_users``)."""
    config = BuildConfig.load(path) if path else BuildConfig()
    if limit_users is not None:
        config.data.max_users = limit_users
    if llm:
        config.llm = llm
    if embedder:
        config.embedder = embedder
    if summarizer:
        config.summary.summarizer = summarizer
    config.validate()
    return config


@app.command()
def build(
    data: Annotated[
        Path, typer.Argument(help="Data file or folder (Amazon 2014/2023, the 2023 sample, DPL JSON lines).")
    ],
    store: Annotated[str, typer.Option(help="The store, created or resumed: a SQLite file or a postgresql:// URL.")],
    config: Annotated[Optional[Path], typer.Option(help="Config file (TOML or JSON); see `copersona config`.")] = None,
    limit_users: Annotated[
        Optional[int], typer.Option(min=1, help="Keep at most N users (first by id) after filtering.")
    ] = None,
    llm: Annotated[
        Optional[str], typer.Option(help="LLM spec: smollm2, llamacpp:PATH, openai:MODEL@URL, hf:PATH.")
    ] = None,
    embedder: Annotated[Optional[str], typer.Option(help="Embedder spec: minilm or st:NAME_OR_PATH.")] = None,
    summarizer: Annotated[Optional[str], typer.Option(help="extractive (default) or abstractive.")] = None,
    batch_users: Annotated[int, typer.Option(min=1, help="Users whose facet states are written per transaction.")] = 32,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Build (or resume) the persona graph of DATA into STORE."""
    from copersona.build import Backends, Build
    from copersona.engines import open_engine
    from copersona.store import Store

    build_config = _config(config, llm, embedder, summarizer, limit_users)
    if not data.exists():  # before the store is created: a typo must not leave an empty store behind
        raise FileNotFoundError(f"{data}: no such data file or folder")
    with Store(store, create=True) as db, closing(open_engine(engine, ray_address)) as runs_on:
        runner = Build(db, build_config, Backends.of(build_config), RichProgress(), runs_on)
        result = runner.run(data, batch_users=batch_users)
        table = Table(title=f"build of {store}")
        for column in ("stage", "seconds", "details"):
            table.add_column(column)
        for stage, run in result.stages.items():
            brief = {k: v for k, v in run.details.items() if k not in ("seconds", "report", "llm")}
            table.add_row(stage, f"{run.details.get('seconds', 0):.1f}", json.dumps(brief)[:160])
        console.print(table)
        if "load" in result.stages and "report" in result.stages["load"].details:
            _print_load_problems(console, result.stages["load"].details["report"])


@app.command()
def inspect(
    store: StoreArgument,
    user: Annotated[
        Optional[str],
        typer.Option(help="Show this user's facets, quotes, labels, neighbours and Persona-DB levels."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Summarize a store, or show one user's persona."""
    from copersona.inspect import overview, user_persona
    from copersona.store import Store

    with Store(store, read_only=True) as db:
        data = user_persona(db, user) if user else overview(db)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif user:
        _print_user(data)
    else:
        _print_overview(data)


def _print_overview(data: dict) -> None:
    out = _out()
    out.print(
        Text.assemble(
            (str(data["store"]), "bold"),
            f": {data['users']} users, examples {data['examples']}, "
            f"embedder {data['embedder']}, summarizer {data['summarizer']}",
        )
    )
    schema = data["schema"]
    out.print(f"facet schema ({schema['source']}): {schema['note']}")
    for facet in schema["facets"]:
        out.print(Text.assemble("  ", (facet["name"], "bold"), f": {facet['definition']}"))
    levels = ("none", "weak", "moderate", "strong")
    table = Table("facet", *levels, "edges", "users w/ edges", "mean weight")
    for facet in schema["facets"]:
        counts = data["reliability"].get(facet["key"], {})
        edges = data["edges"].get(facet["key"], {})
        table.add_row(
            facet["name"],
            *[str(counts.get(level, 0)) for level in levels],
            str(edges.get("edges", 0)),
            str(edges.get("users_with_edges", 0)),
            f"{edges.get('mean_weight', 0):.3f}",
        )
    out.print(table)
    bias = data["facet_biased"]
    out.print(f"facet-biased users (a facet no stronger than moderate): {bias['users']} ({bias['fraction']:.1%})")
    out.print(
        f"quotes kept {data['quotes']['kept']}, dropped {data['quotes']['dropped']}; "
        f"fallbacks {data['fallbacks'] or 'none'}; LLM cache {data['llm_cache']}"
    )
    for load in data["load"]:
        out.print(
            f"load {load['source']}: read {load['read']}, kept {load['kept']}, dropped {load['dropped']}, "
            f"kept with caveats {load.get('flagged') or {}}"
        )
        _print_load_problems(out, load)
    runs = Table("stage", "status", "seconds", title="run log")
    for run in data["runs"]:
        runs.add_row(run["stage"], run["status"], str(run["seconds"]))
    out.print(runs)


def _print_load_problems(out: Console, load: dict, shown: int = 5) -> None:
    """A load's notes (a truncated file) and where its first dropped records are (file and line)."""
    for note in load.get("notes", []):
        out.print(f"  note: {note}", style="yellow")
    issues = load.get("issues", [])
    for issue in issues[:shown]:
        place = f"{issue['file']}:{issue['line']}" if issue.get("line") is not None else issue.get("file", "")
        out.print(f"  dropped {issue['reason']} at {place}" + (f": {issue['detail']}" if issue.get("detail") else ""))
    if len(issues) > shown:
        out.print(f"  ... {len(issues) - shown} more listed by `copersona inspect --json`", style="dim")


def _print_user(data: dict) -> None:
    out = _out()
    out.print(
        Text.assemble(
            (data["user_id"], "bold"),
            f": {data['profile_reviews']} profile reviews, {data['heldout_reviews']} held out",
        )
    )
    for facet in data["facets"]:
        out.rule(f"{facet['facet']} - {facet['reliability']}")
        out.print(Text(facet["summary"]) if facet["summary"] else Text("(no evidence)", style="dim"))
        for quote in facet["quotes"]:
            out.print(Text(f'  "{quote}"', style="italic"))
        if facet["fallback"]:
            out.print(Text(f"  fallback: {facet['fallback']}", style="yellow"))
        peers = ", ".join(f"{n['user_id']} ({n['weight']:.3f})" for n in facet["neighbours"]) or "none"
        out.print(f"  neighbours: {peers}")
    if data["persona_layer_neighbours"]:
        out.rule("whole-persona layer (profile embedding and writing style)")
        peers = ", ".join(f"{n['user_id']} ({n['weight']:.3f})" for n in data["persona_layer_neighbours"])
        out.print(f"  neighbours: {peers}")
    out.rule("peers by combined similarity")
    for n in data["combined_neighbours"]:
        out.print(f"  {n['user_id']}: {n['combined']:.3f} over {len(n['facets'])} layer(s)")
    for persona in data["persona_db"]:
        out.rule(f"Persona-DB (profile {persona['profile']})")
        for unit in persona["units"]:
            out.print(Text.assemble((f"  [{unit['level']}] ", "bold"), unit["text"], (f"  ({unit['made_by']})", "dim")))


@app.command(name="check-graph")
def check_graph_command(
    store: StoreArgument,
    neighbours: Annotated[int, typer.Option(min=1, help="Peers per user taken from each graph.")] = 3,
    max_users: Annotated[Optional[int], typer.Option(min=3, help="Check at most N users (first by id).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the results as JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
    split: Annotated[
        str, typer.Option(help="Held-out reviews scored against: validation (for design choices) or test.")
    ] = "validation",
) -> None:
    """Are graph neighbours better exemplars of a user's held-out review than random users?"""
    from copersona.backends import load_embedder
    from copersona.eval.graph_check import check_graph, facet_separation
    from copersona.store import Store

    with Store(store, read_only=True) as db:
        embedder = load_embedder(db.get_meta("pinned_config")["embedder"])
        with console.status("scoring neighbours against random peers"):
            results = check_graph(db, embedder, neighbours=neighbours, max_users=max_users, split=split)
        separation = facet_separation(db)
        payload = {
            "store": str(store),
            "split": split,
            "summarizer": db.get_meta("summarizer"),
            "neighbours": neighbours,
            "persona_weight": db.persona_weight(),
            "results": [r.to_dict() for r in results],
            "facet_separation": [f.to_dict() for f in separation],
        }
    if out:
        out.write_text(json.dumps(payload, indent=2))
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(
        "graph",
        "users",
        "cosine lift [95% CI]",
        "ROUGE-L lift [95% CI]",
        "cosine: lift - global's",
        "ROUGE-L: lift - global's",
        title=f"neighbours vs random peers ({payload['summarizer']} facets, {split} targets, persona weight "
        f"{payload['persona_weight']:g}); paired with the global kNN on every user (no peers: no lift)",
    )
    for r in results:
        table.add_row(
            r.graph,
            str(r.users),
            str(r.cosine_lift),
            str(r.rouge_l_lift),
            str(r.cosine_vs_global or "-"),
            str(r.rouge_l_vs_global or "-"),
        )
    _out().print(table)
    facets = Table(
        "facet",
        "users",
        "across users",
        "within user",
        "separation",
        title="facet separation: cosine of a facet's texts across users minus a user's texts across facets",
    )
    for f in separation:
        facets.add_row(f.facet, str(f.users), f"{f.across_users:.3f}", f"{f.within_user:.3f}", f"{f.separation:+.3f}")
    _out().print(facets)


def _models_dir(db) -> Path:
    """Where trained models of a store go by default: beside its file, or named after its database."""
    return db.path.with_name(f"{db.path.stem}-models") if isinstance(db.path, Path) else Path(f"{db.name}-models")


def _harness_config(
    path: Optional[Path],
    llm: Optional[str] = None,
    retriever: Optional[str] = None,
    neighbours: Optional[int] = None,
    temperature: Optional[float] = None,
    seed: Optional[int] = None,
    metrics: Optional[str] = None,
) -> HarnessConfig:
    """The config file's ``[harness]`` table with the command line's settings on top."""
    config = HarnessConfig.load(path) if path else HarnessConfig()
    if llm:
        config.llm = llm
    if retriever:
        config.retrieval.retriever = retriever
    if neighbours is not None:
        config.retrieval.neighbours = neighbours
    if temperature is not None:
        config.generation.temperature = temperature
    if seed is not None:
        config.generation.seed = seed
    if metrics:
        config.evaluation.metrics = _names(metrics)
    config.validate()
    return config


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


ConfigOption = Annotated[Optional[Path], typer.Option(help="Config file whose [harness] table sets inference.")]
LLMOption = Annotated[Optional[str], typer.Option(help="Generator spec (default: the store's build LLM).")]
RetrieverOption = Annotated[Optional[str], typer.Option(help="Self-history retriever: bm25, dense or recency.")]
NeighboursOption = Annotated[
    Optional[int], typer.Option(min=0, help="Peers in the facet peer context (0 disables it).")
]
TemperatureOption = Annotated[Optional[float], typer.Option(help="Sampling temperature.")]
SeedOption = Annotated[Optional[int], typer.Option(help="Sampling seed.")]


@app.command()
def generate(
    store: StoreArgument,
    user: Annotated[str, typer.Option(help="The user to write for.")],
    item: Annotated[Optional[str], typer.Option(help="Target item id (default: the user's test target).")] = None,
    method: Annotated[str, typer.Option(help="Method name (see `copersona methods`).")] = "copersona-np",
    rating: Annotated[Optional[float], typer.Option(help="Rating of the review to write (new items).")] = None,
    title: Annotated[Optional[str], typer.Option(help="Review title (new items).")] = None,
    explain: Annotated[bool, typer.Option(help="Show the exact input the method built.")] = False,
    config: ConfigOption = None,
    llm: LLMOption = None,
    retriever: RetrieverOption = None,
    neighbours: NeighboursOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
) -> None:
    """Write USER's review of an item with one method (and show what it was given)."""
    from copersona.generate import request_example
    from copersona.inference import open_runtime
    from copersona.store import Store

    harness_config = _harness_config(config, llm, retriever, neighbours, temperature, seed)
    with Store(store, create=False) as db:
        example = request_example(db, user, item, rating=rating, title=title)
        if item is not None and db.item_context(item) is None:
            console.print(
                f"note: item {item!r} is not in the store: the prompt names it by its id"
                + ("" if title else " (give --title for a readable one)")
                + " and has no description",
                style="yellow",
                soft_wrap=True,
            )
        runtime = open_runtime(db, harness_config, progress=RichProgress())
        prediction = runtime.predict(method, [example])[0]
        if explain:
            console.print_json(json.dumps(runtime.inputs(method, example).to_dict()))
    typer.echo(prediction.text)


DEFAULT_METHODS = {
    "review": "nonperso,rag,pag,dpl,copersona-np",
    "rating": "nonperso,rag,pag,dpl,copersona-np,persona-db",
}


def _sparse_tables(db, runtime, names, examples, out, name, split, task, limit, allow_mixed) -> list[Path]:
    """The sparse-user tables of ``evaluate --sparse``: the fewest-reviews quarter, and capped profiles."""
    from copersona.eval.harness import evaluate as run_evaluation
    from copersona.eval.harness import fewest_reviews
    from copersona.eval.history_curve import run_history_caps
    from copersona.eval.report import write_evaluation

    written = []
    sparse = fewest_reviews(examples)
    most = max(len(e.profile) for e in sparse)
    evaluation = run_evaluation(runtime, names, sparse, split=split, allow_mixed=allow_mixed)
    title = f"{name}: {split} split, the quarter of examples with the fewest profile reviews (at most {most})"
    written += write_evaluation(evaluation, out / "fewest-reviews", title=title)
    capped = run_history_caps(
        runtime, names, db, split=split, limit=limit, task=task, caps=[1, 2], allow_mixed=allow_mixed
    )
    for cap, evaluation in capped.items():
        written += write_evaluation(
            evaluation, out / f"cap-{cap}", title=f"{name}: {split} split, profiles capped at {cap}"
        )
    return written


@app.command()
def evaluate(
    store: StoreArgument,
    out: Annotated[Path, typer.Option(help="Folder for results.json/csv, predictions.jsonl, report.md, plots.")],
    methods: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated methods (default: the task's); the task's no-LLM reference points are always "
            "added (review: copy-self, copy-peer; rating: user-mean, item-mean, rating-mf)."
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(help="review: write the held-out review; rating: predict its 1-5 rating from the item alone."),
    ] = "review",
    profile_cap: Annotated[
        Optional[int],
        typer.Option(min=1, help="Keep only each profile's N most recent reviews (sparse-history experiments)."),
    ] = None,
    history_cap: Annotated[
        Optional[str],
        typer.Option(
            help="The sparse-history curve: evaluate every method on the same targets with each profile cut to its "
            "N most recent reviews, for each N of a comma-separated list (e.g. 0,1,2,4,all; 0 is a cold start). "
            "Writes OUT/cap-N/ per cap and OUT/history-curve.{md,csv,json,png}; answers are cached, so a rerun resumes."
        ),
    ] = None,
    sparse: Annotated[
        bool,
        typer.Option(
            help="Also write the tables of sparse users: the quarter of examples with the fewest profile reviews "
            "(OUT/fewest-reviews), and profiles capped at 1 and 2 reviews (OUT/cap-1, OUT/cap-2)."
        ),
    ] = False,
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    limit: Annotated[
        Optional[int], typer.Option(min=1, help="Evaluate the first N users (by id) of the split.")
    ] = None,
    metrics: Annotated[Optional[str], typer.Option(help="Comma-separated metrics (default: all five).")] = None,
    judge: Annotated[Optional[str], typer.Option(help="Also score with this LLM as judge (spec).")] = None,
    ablation: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Also run an ablation: neighbours, retriever, temperature, facets or retrieval-size (the context "
            "efficiency curve: 1, 2, 4, 8 retrieved units); NAME=V1,V2 runs only those values (repeatable)."
        ),
    ] = None,
    finetuned: Annotated[
        bool,
        typer.Option(
            help="Equal-budget fine-tuned mode: train (or reuse) one LoRA adapter per generating method on its "
            "own inputs with the config's [training] budget, then evaluate each with its adapter."
        ),
    ] = False,
    models_dir: Annotated[
        Optional[Path], typer.Option(help="Where --finetuned keeps its models (default: STORE's folder/STEM-models).")
    ] = None,
    model: Annotated[
        Optional[list[Path]],
        typer.Option(help="A trained model folder (copersona train --out) used for its method (repeatable)."),
    ] = None,
    allow_mixed: Annotated[
        bool,
        typer.Option(
            help="Compare methods that run on different generators (base and fine-tuned); every table marks them."
        ),
    ] = False,
    config: ConfigOption = None,
    llm: LLMOption = None,
    retriever: RetrieverOption = None,
    neighbours: NeighboursOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Run methods and the no-LLM reference points on one split; write results, a report and plots.

    Every method runs on the base generator unless --finetuned or --model says otherwise; methods
    with soft prompts (copersona, copersona-p, dep) need a trained model: the store's (registered by
    `copersona train`), one given with --model, or --finetuned. Methods on different generators are
    refused unless --allow-mixed.
    """
    from copersona.engines import open_engine
    from copersona.eval.ablation import check_ablations, run_ablations
    from copersona.eval.harness import evaluate as run_evaluation
    from copersona.eval.harness import select_examples
    from copersona.eval.report import write_evaluation
    from copersona.inference import cached_llm, open_runtime
    from copersona.methods import REFERENCE_METHODS, TASKS, method_class
    from copersona.model.trained import TrainedModel
    from copersona.store import Store

    if task not in TASKS:
        raise typer.BadParameter(f"use one of {', '.join(TASKS)}", param_hint="--task")
    if task == "rating" and (metrics or judge):
        raise typer.BadParameter("the rating task has its own metrics (MAE, RMSE, Pearson, Spearman, accuracy)")
    harness_config = _harness_config(config, llm, retriever, neighbours, temperature, seed, metrics)
    names = _names(methods or DEFAULT_METHODS[task])
    names += [r for r in REFERENCE_METHODS[task] if r not in names]
    wrong = [n for n in names if task not in method_class(n).tasks]
    if wrong:  # refused before any work
        raise typer.BadParameter(f"{', '.join(wrong)} do not answer the {task} task", param_hint="--methods")
    caps = None
    if history_cap is not None:
        from copersona.eval.history_curve import parse_caps, refused_under_caps

        if profile_cap is not None or sparse or ablation or judge:
            raise typer.BadParameter(
                "a sweep of its own: leave out --profile-cap, --sparse, --ablation and --judge",
                param_hint="--history-cap",
            )
        try:
            caps = parse_caps(history_cap)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--history-cap") from None
        refused = refused_under_caps(names)
        if refused and any(c is not None for c in caps):
            raise typer.BadParameter(
                f"{', '.join(refused)} carry soft prompts computed from whole profiles and cannot serve a cut one",
                param_hint="--methods",
            )
    writable_folder(out)  # checked before the work, not after it
    with Store(store, create=False) as db, closing(open_engine(engine, ray_address)) as runs_on:
        examples = select_examples(db, split, limit, task=task, profile_cap=profile_cap)
        if not examples:
            raise ValueError(f"{store}: no {split} examples" + (" with a rating" if task == "rating" else ""))
        progress = RichProgress()
        trained = {m.method: m for m in (TrainedModel.load(folder) for folder in model or [])}
        if finetuned:
            from copersona.model.train import train_equal_budget

            training = TrainingConfig.load(config) if config else TrainingConfig()
            root = models_dir or _models_dir(db)
            trained = train_equal_budget(db, names, root, training, harness_config, given=trained, progress=progress)
        runtime = open_runtime(db, harness_config, progress=progress, models=trained, engine=runs_on)
        if caps is not None:
            from copersona.eval.history_curve import run_history_caps, write_history_curve

            results = run_history_caps(
                runtime, names, db, split=split, limit=limit, task=task, caps=caps, allow_mixed=allow_mixed
            )
            written = write_history_curve(results, out, title=f"{db.name}: {split} split, sparse-history curve")
            console.print((out / "history-curve.md").read_text())
            console.print("wrote " + ", ".join(str(p) for p in written))
            return
        check_ablations(ablation or [], runtime)
        judge_llm = None
        if judge:  # one model in memory when the judge is the generator
            judge_llm = runtime.llm() if judge == runtime.base_generator else cached_llm(db, judge)
        evaluation = run_evaluation(runtime, names, examples, split=split, judge=judge_llm, allow_mixed=allow_mixed)
        title = f"{db.name}: {split} split" + (f", profiles capped at {profile_cap}" if profile_cap else "")
        written = write_evaluation(evaluation, out, title=title)
        if sparse:
            written += _sparse_tables(db, runtime, names, examples, out, db.name, split, task, limit, allow_mixed)
        used = {name: m.curve for name, m in runtime.models.items() if name in names}
        if used:
            from copersona.model.report import plot_curves

            plot_curves(used, out / "training-curves.png", title=f"trained models used on {db.name}")
            written.append(out / "training-curves.png")
        if ablation:
            written += run_ablations(ablation, db, runtime, examples, out, split=split)
    console.print((out / "report.md").read_text())
    console.print("wrote " + ", ".join(str(p) for p in written))


@app.command()
def train(
    store: StoreArgument,
    out: Annotated[Path, typer.Option(help="Folder of the run: checkpoints, adapter, personalizer, curve.")],
    method: Annotated[str, typer.Option(help="Whose inputs train the model (see `copersona methods`).")] = "copersona",
    config: Annotated[
        Optional[Path], typer.Option(help="Config file: its [training] table sets the budget, [harness] the inputs.")
    ] = None,
    llm: Annotated[Optional[str], typer.Option(help="Base model spec (default: the store's build LLM).")] = None,
    stop_after: Annotated[
        Optional[int], typer.Option(min=1, help="Stop after this many steps with a checkpoint; rerun to resume.")
    ] = None,
    register: Annotated[bool, typer.Option(help="Make `evaluate` and `generate` use this model for METHOD.")] = True,
    algorithm: Annotated[
        str,
        typer.Option(
            help="sft: supervised LoRA fine-tuning on the targets; grpo: reinforcement learning (TRL's GRPO) of the "
            "same LoRA adapter, rewarded by ROUGE-L/METEOR against the targets with a length penalty ([training.grpo])."
        ),
    ] = "sft",
) -> None:
    """Fine-tune the generator with LoRA (and the personalizer, for methods with soft prompts).

    Resumes from the folder's last checkpoint; caches every user's soft prompt in the store.
    """
    if algorithm not in ("sft", "grpo"):
        raise typer.BadParameter("use sft or grpo", param_hint="--algorithm")
    from copersona.inference import generator_spec
    from copersona.model.train import Trainer
    from copersona.store import Store

    harness_config = _harness_config(config, llm)
    training = TrainingConfig.load(config) if config else TrainingConfig()
    writable_folder(out)
    with Store(store, create=False) as db:
        base = generator_spec(db, harness_config)
        if algorithm == "grpo":
            from copersona.model.grpo import GRPOTrainer

            trainer = GRPOTrainer(
                db, method, out, training, harness_config, base=base, progress=RichProgress(), grpo=training.grpo
            )
        else:
            trainer = Trainer(db, method, out, training, harness_config, base=base, progress=RichProgress())
        trained = trainer.run(stop_after=stop_after)
        if trained is None:
            console.print(f"stopped at a checkpoint in {out}; run the same command again to resume")
            return
        if register:
            db.register_trained_model(trained.method, trained.key, str(out.resolve()))
    summary = trained.summary()
    first, last = summary.initial_validation_loss, summary.final_validation_loss
    losses = f"validation loss {first:.4f} -> {last:.4f}" if first is not None else "no validation losses"
    if algorithm == "grpo":
        rewards = [e["reward"] for e in json.loads((out / "grpo-log.json").read_text())]
        losses = f"mean reward {rewards[0]:.4f} (first step) -> {rewards[-1]:.4f} (last)"
    console.print(
        f"trained {trained.key}: {trained.steps} steps in {trained.seconds / 60:.1f} min; {losses}; "
        f"curve in {out / 'curve.png'}"
    )


@app.command()
def serve(
    store: StoreArgument,
    host: Annotated[str, typer.Option(help="Address to bind (without --api-keys: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    config: Annotated[
        Optional[Path], typer.Option(help="Config file: its [harness] table sets inference, [serve] the limits.")
    ] = None,
    api_keys: Annotated[
        Optional[Path], typer.Option(help="File of bearer tokens, one per line (required off loopback).")
    ] = None,
    llm: LLMOption = None,
) -> None:
    """Serve STORE over HTTP: OpenAI-compatible chat completions (model = method, user = persona)
    and the persona API."""
    import uvicorn

    from copersona.config import ServeConfig
    from copersona.serve import open_app

    harness_config = _harness_config(config, llm)
    settings = ServeConfig.load(config) if config else ServeConfig()
    application, _service = open_app(store, harness_config, settings, api_keys=api_keys, host=host)
    console.print(f"serving {store} at http://{host}:{port} (OpenAI base URL: http://{host}:{port}/v1)")
    uvicorn.run(application, host=host, port=port, log_level="warning")


@app.command(name="add-reviews")
def add_reviews_command(
    store: StoreArgument,
    data: Annotated[Path, typer.Argument(help="Reviews to add, in any format `build` reads.")],
) -> None:
    """Add DATA's reviews to STORE without a rebuild: the users' facet states, embeddings and graph
    neighbourhoods are refreshed in one transaction (the schema and calibration stay frozen)."""
    from copersona.build import Build
    from copersona.data.loaders import load_path
    from copersona.live import add_reviews
    from copersona.store import Store

    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data file or folder")
    reviews, report = load_path(data)
    with Store(store, create=False) as db:
        update = add_reviews(Build.of(db, RichProgress()), reviews)
    typer.echo(
        f"added {update.added} and replaced {update.replaced} reviews of {len(update.users)} users "
        f"({update.new_users} new); {update.neighbour_rows} neighbour lists searched again; "
        f"{update.soft_prompts_dropped} soft prompts dropped; {update.seconds:.2f} s"
    )
    _print_load_problems(console, report.to_dict())


@app.command(name="delete-user")
def delete_user(
    store: StoreArgument,
    user: Annotated[str, typer.Argument(help="The user to forget.")],
) -> None:
    """Forget USER: reviews, facet states, edges both ways, soft prompts and every cached LLM text
    holding their words; neighbours' lists are recomputed and the file compacted."""
    from copersona.live import erase_user
    from copersona.store import Store

    with Store(store, create=False) as db:
        report = erase_user(db, user)
    removed = ", ".join(f"{count} {table}" for table, count in report.removed.items())
    typer.echo(f"forgot {user}: removed {removed}; {report.neighbours_recomputed} neighbour lists recomputed")


@app.command()
def migrate(
    source: Annotated[str, typer.Argument(help="The store to copy: a SQLite file or a postgresql:// URL.")],
    target: Annotated[str, typer.Argument(help="An empty store to copy it into: a postgresql:// URL or a new file.")],
) -> None:
    """Copy a store into another database (SQLite to PostgreSQL, back, or file to file): every
    table, in one snapshot of SOURCE and one transaction of TARGET, so an interrupted copy leaves
    TARGET empty."""
    from copersona.store import Store
    from copersona.store.migrate import copy_store

    with Store(source, read_only=True) as db, Store(target, create=True) as into:
        copied = copy_store(db, into, RichProgress())
    rows = ", ".join(f"{count} {table}" for table, count in copied.items() if count)
    typer.echo(f"copied {db.path} into {into.path}: {rows}")


@app.command(name="methods")
def list_methods() -> None:
    """The methods of the harness."""
    from copersona.methods import METHODS

    table = Table("method", "role", "tasks", "uses LLM", "what it gives the generator")
    for name, method in METHODS.items():
        uses = "yes" if method.uses_generator else "no"
        table.add_row(name, method.role, ", ".join(method.tasks), uses, method.description)
    _out().print(table)


@app.command(name="config")
def show_config() -> None:
    """Every setting with its default and meaning (build sections, then [harness], [training], [serve], [rec])."""
    from copersona.config import ServeConfig
    from copersona.rec.config import RecConfig

    table = Table("setting", "default", "meaning")
    settings = (
        describe(BuildConfig)
        + describe(HarnessConfig, "harness.")
        + describe(TrainingConfig, "training.")
        + describe(ServeConfig, "serve.")
        + describe(RecConfig, "rec.")
    )
    for name, default, text in settings:
        table.add_row(name, json.dumps(default), text)
    _out().print(table)


def _add_groups() -> None:
    from copersona.rec.cli import rec_app

    app.add_typer(rec_app, name="rec")


_add_groups()


def main(args: list[str] | None = None) -> None:
    """The ``copersona`` command (``args``: the command line, default ``sys.argv[1:]``): every error
    as one line and exit status 1, never a traceback.

    Bad input, a wrong store, a bad setting or command-line value are the user's to fix and say
    so; anything else is a bug, shown as one line too (``COPERSONA_TRACEBACK=1`` shows where).
    An interrupted command exits 130; long jobs resume from their checkpoints when rerun.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

    from copersona.store import StoreError

    try:
        app(args=args, standalone_mode=False)
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except NoArgsIsHelpError as bare:  # `copersona` alone: its help
        typer.echo(bare.format_message())
    except ClickException as err:  # a bad command line: unknown option, a value out of range
        where = err.ctx.command_path if getattr(err, "ctx", None) is not None else "copersona"
        _fail(f"{err.format_message()} (see `{where} --help`)")
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted; rerun the same command to resume", style="yellow")
        raise SystemExit(130) from None
    except (StoreError, ValueError, OSError) as err:  # a facet schema's SchemaError is a ValueError
        _fail(str(err))
    except Exception as err:
        if os.environ.get("COPERSONA_TRACEBACK"):
            raise
        _fail(f"unexpected {type(err).__name__}: {err} (a bug; COPERSONA_TRACEBACK=1 shows where)")


def _fail(message: str) -> None:
    one_line = " ".join(message.split())  # a message quoting data may hold newlines
    console.print(Text.assemble(("error:", "red"), f" {one_line}"), soft_wrap=True)
    raise SystemExit(1) from None


if __name__ == "__main__":
    main()
