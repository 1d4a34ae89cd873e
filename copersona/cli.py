"""The command line: thin shells over the library, with progress bars and readable output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from copersona.config import BuildConfig, describe

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="CoPersona: collaborative persona graphs.",
)
console = Console(stderr=True)


class RichProgress:
    """Build progress as rich bars on stderr (stdout stays clean for --json)."""

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(name, total=total)
            yield lambda advance: bar.advance(task, advance)

    def message(self, text: str) -> None:
        console.print(f"[dim]{text}[/dim]")


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
    return config


def backends_for(config: BuildConfig):
    """Model factories from the config's spec strings (models load only when a stage needs them)."""
    from copersona.backends import load_embedder, load_llm_backend
    from copersona.backends.llm import LLM
    from copersona.build import Backends

    return Backends(
        embedder_factory=lambda: load_embedder(config.embedder),
        llm_factory=lambda store: LLM(load_llm_backend(config.llm), cache=store),
    )


@app.command()
def build(
    data: Annotated[
        Path, typer.Argument(help="Data file or folder (Amazon 2014/2023, the 2023 sample, DPL JSON lines).")
    ],
    store: Annotated[Path, typer.Option(help="The store file (SQLite); created or resumed.")],
    config: Annotated[Optional[Path], typer.Option(help="Config file (TOML or JSON); see `copersona config`.")] = None,
    limit_users: Annotated[
        Optional[int], typer.Option(help="Keep at most N users (first by id) after filtering.")
    ] = None,
    llm: Annotated[
        Optional[str], typer.Option(help="LLM spec: smollm2, llamacpp:PATH, openai:MODEL@URL, hf:PATH.")
    ] = None,
    embedder: Annotated[Optional[str], typer.Option(help="Embedder spec: minilm or st:NAME_OR_PATH.")] = None,
    summarizer: Annotated[Optional[str], typer.Option(help="extractive (default) or abstractive.")] = None,
    batch_users: Annotated[int, typer.Option(help="Users whose facet states are written per transaction.")] = 32,
) -> None:
    """Build (or resume) the persona graph of DATA into STORE."""
    from copersona.build import Build
    from copersona.store.sqlite import Store

    build_config = _config(config, llm, embedder, summarizer, limit_users)
    with Store(store) as db:
        runner = Build(db, build_config, backends_for(build_config), RichProgress())
        result = runner.run(data, batch_users=batch_users)
        table = Table(title=f"build of {store}")
        for column in ("stage", "seconds", "details"):
            table.add_column(column)
        for stage, details in result.stages.items():
            brief = {k: v for k, v in details.items() if k not in ("seconds", "report", "llm")}
            table.add_row(stage, f"{details.get('seconds', 0):.1f}", json.dumps(brief)[:160])
        console.print(table)


@app.command()
def inspect(
    store: Annotated[Path, typer.Argument(help="A store file written by `copersona build`.")],
    user: Annotated[Optional[str], typer.Option(help="Show this user's facets, quotes, labels and neighbours.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Summarize a store, or show one user's persona."""
    from copersona.inspect import overview, user_persona
    from copersona.store.sqlite import Store

    with Store(store, read_only=True) as db:
        data = user_persona(db, user) if user else overview(db)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif user:
        _print_user(data)
    else:
        _print_overview(data)


def _print_overview(data: dict) -> None:
    out = Console()
    out.print(
        f"[bold]{data['store']}[/bold]: {data['users']} users, examples {data['examples']}, "
        f"embedder {data['embedder']}, summarizer {data['summarizer']}"
    )
    schema = data["schema"]
    out.print(f"facet schema ({schema['source']}): {schema['note']}")
    for facet in schema["facets"]:
        out.print(f"  [bold]{facet['name']}[/bold]: {facet['definition']}")
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
    runs = Table("stage", "status", "seconds", title="run log")
    for run in data["runs"]:
        runs.add_row(run["stage"], run["status"], str(run["seconds"]))
    out.print(runs)


def _print_user(data: dict) -> None:
    out = Console()
    out.print(
        f"[bold]{data['user_id']}[/bold]: {data['profile_reviews']} profile reviews, {data['heldout_reviews']} held out"
    )
    for facet in data["facets"]:
        out.rule(f"{facet['facet']} - {facet['reliability']}")
        out.print(facet["summary"] or "[dim](no evidence)[/dim]")
        for quote in facet["quotes"]:
            out.print(f'  [italic]"{quote}"[/italic]')
        if facet["fallback"]:
            out.print(f"  [yellow]fallback: {facet['fallback']}[/yellow]")
        peers = ", ".join(f"{n['user_id']} ({n['weight']:.3f})" for n in facet["neighbours"]) or "none"
        out.print(f"  neighbours: {peers}")
    out.rule("peers by combined similarity")
    for n in data["combined_neighbours"]:
        out.print(f"  {n['user_id']}: {n['combined']:.3f} over {len(n['facets'])} facet(s)")


@app.command(name="check-graph")
def check_graph_command(
    store: Annotated[Path, typer.Argument(help="A store file written by `copersona build`.")],
    neighbours: Annotated[int, typer.Option(help="Peers per user taken from each graph.")] = 3,
    max_users: Annotated[Optional[int], typer.Option(help="Check at most N users (first by id).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the results as JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Are graph neighbours better exemplars of a user's held-out review than random users?"""
    from copersona.backends import load_embedder
    from copersona.eval.graph_check import check_graph
    from copersona.store.sqlite import Store

    with Store(store, read_only=True) as db:
        embedder = load_embedder(db.get_meta("pinned_config")["embedder"])
        with console.status("scoring neighbours against random peers"):
            results = check_graph(db, embedder, neighbours=neighbours, max_users=max_users)
        payload = {
            "store": str(store),
            "summarizer": db.get_meta("summarizer"),
            "neighbours": neighbours,
            "results": [r.to_dict() for r in results],
        }
    if out:
        out.write_text(json.dumps(payload, indent=2))
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(
        "graph",
        "users",
        "cosine nb",
        "cosine rnd",
        "cosine lift [95% CI]",
        "ROUGE-L nb",
        "ROUGE-L rnd",
        "ROUGE-L lift [95% CI]",
        title=f"neighbours vs random peers ({payload['summarizer']} facets)",
    )
    for r in results:
        table.add_row(
            r.graph,
            str(r.users),
            f"{r.cosine.mean:.4f}",
            f"{r.cosine_random:.4f}",
            str(r.cosine_lift),
            f"{r.rouge_l.mean:.4f}",
            f"{r.rouge_l_random:.4f}",
            str(r.rouge_l_lift),
        )
    Console().print(table)


@app.command(name="config")
def show_config() -> None:
    """Every setting with its default and meaning."""
    table = Table("setting", "default", "meaning")
    for name, default, text in describe(BuildConfig):
        table.add_row(name, json.dumps(default), text)
    Console().print(table)


def main() -> None:
    """The ``copersona`` command: known errors (bad input, a wrong store) as one line, not a traceback."""
    from copersona.facets.induction import SchemaError
    from copersona.store.sqlite import StoreError

    try:
        app(standalone_mode=True)
    except (StoreError, SchemaError, ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
