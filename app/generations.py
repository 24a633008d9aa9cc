"""`corpusmill generations list|build|promote|rollback|drop`: the model lifecycle from the shell.

    corpusmill generations list                 # id, model, state, rows, shards, checks, gate
    CORPUSMILL_MODEL=/models/new corpusmill generations build   # beside the live one
    corpusmill generations promote g1a2b3c4d5   # live now, if complete and checked
    corpusmill generations rollback             # back to the previous live generation
    corpusmill generations drop g0f9e8d7c6      # its tables, nothing else

Every command takes `--json`. The decisions are `corpusmill.lifecycle.operations`; this is
the shell around them (the UI's is the `live_generation` asset).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from corpusmill.config import Settings


def _store(settings: Settings):
    from corpusmill.store import Store

    return Store(settings.db, settings.storage_options)


def _pool(settings: Settings):
    from corpusmill.model import Model
    from corpusmill.model.pool import ModelPool

    return ModelPool(Model(settings.embedder_spec()))


def _configured_id(settings: Settings) -> str:
    from corpusmill.model import Model
    from corpusmill.model.card import generation_id

    return generation_id(Model(settings.embedder_spec()).card)


def cmd_list(args, settings: Settings) -> int:
    from corpusmill.lifecycle.operations import describe
    from corpusmill.model import Model
    from corpusmill.store.generations import read_registry, register

    store = _store(settings)
    # The configured model's generation learns its path (if it had none): a generation
    # migrated from an older store, or built on another machine, is found again.
    model = Model(settings.embedder_spec())
    if model.card.as_metadata() in [
        g.card.as_metadata() for g in read_registry(store).generations.values()
    ]:
        register(store, model.card, model_path=str(Path(model.path).resolve()))
    rows = describe(store)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no generations: run `corpusmill ingest` first")
    for r in rows:
        checks = r["checks"].get("passed")
        gate = r["gate"]
        print(
            f"{r['id']}  {r['state']:<8} {r['model_id']}  {r['dimension']}-d  rows {r['rows']}  "
            f"shards {r['shards_complete']}/{r['shards']}  checks "
            f"{'passed' if checks else 'failed' if checks is False else '-'}  gate "
            f"{_gate(gate)}  created {r['created']}"
        )
        if r["note"]:
            print(f"    {r['note']}")
    return 0


def _gate(gate: dict[str, Any]) -> str:
    if not gate:
        return "-"
    if "candidate" in gate:
        verdict = "passed" if gate["passed"] else "refused"
        return f"{verdict} ({gate['candidate']:.4f} vs live {gate['live']:.4f})"
    return "refused" if not gate.get("passed") else "passed"


def _print(outcome, as_json: bool) -> int:
    if as_json:
        print(json.dumps(outcome.as_dict()))
    elif outcome.done:
        print(f"{outcome.action}: {outcome.generation or '-'} done; live: {outcome.live}")
    else:
        print(f"{outcome.action}: {outcome.generation or '-'} not done: {outcome.reason}")
    return 0 if outcome.done else 1


def cmd_promote(args, settings: Settings) -> int:
    from corpusmill.lifecycle.operations import promote

    pool = _pool(settings)
    try:
        outcome = promote(_store(settings), args.generation, pool, settings.gate())
    finally:
        pool.release()
    return _print(outcome, args.json)


def cmd_rollback(args, settings: Settings) -> int:
    from corpusmill.lifecycle.operations import rollback

    return _print(rollback(_store(settings)), args.json)


def cmd_drop(args, settings: Settings) -> int:
    from corpusmill.lifecycle.operations import drop

    outcome = drop(_store(settings), args.generation, configured=_configured_id(settings))
    return _print(outcome, args.json)


def cmd_build(args, settings: Settings) -> int:
    """The `build_generation` job over all shards: the configured model's generation from
    the documents already stored (none read from the sources again)."""
    from app.progress import ingest_progress
    from app.runs import instance_for, run_ingest

    # The instance is closed after the run: its event log's connections with it
    # (dagster_corpusmill/event_log.py keeps them open while the process lives).
    with ingest_progress(args.json) as progress, instance_for(settings) as instance:
        summary = run_ingest(
            [],
            settings,
            instance=instance,
            progress=progress,
            job="build_generation",
            log_level="WARNING" if args.debug else "CRITICAL",
        )
    keys = ("generation", "chunks", "chunks_embedded", "chunks_reused", "tokens_per_s", "seconds")
    if args.json:
        print(json.dumps(summary))
    else:
        for key in (*keys, "live_generation", "promotion_refused"):
            print(f"{key:>20}: {summary[key]}")
    return 0 if summary["success"] else 1


def add_parser(sub) -> list[argparse.ArgumentParser]:
    """The `generations` command under `sub`; its subcommands' parsers."""
    generation = ("generation", "a generation id (`generations list`)")
    return add_group(
        sub,
        "generations",
        "model generations: list, build, promote, rollback, drop",
        "A generation is everything one model wrote (chunks, vectors, rerank "
        "scores); one is live (search answers from it). A new CORPUSMILL_MODEL builds its "
        "generation beside the live one; promotion switches in one commit.",
        [
            ("list", cmd_list, "every generation: state, rows, shards, checks, gate", None),
            (
                "build",
                cmd_build,
                "build the configured model's generation from stored documents",
                None,
            ),
            (
                "promote",
                cmd_promote,
                "make a generation live (complete, checked, gated)",
                generation,
            ),
            ("rollback", cmd_rollback, "return to the previous live generation", None),
            ("drop", cmd_drop, "remove a generation's tables (never the live one)", generation),
        ],
    )


def add_group(
    sub, name: str, text: str, description: str, commands
) -> list[argparse.ArgumentParser]:
    """A command `name` under `sub` with subcommands, each (name, func, help, positional
    argument as (name, help) or None), each taking `--json`; the subcommands' parsers."""
    g = sub.add_parser(name, help=text, description=description)
    gsub = g.add_subparsers(dest="action", required=True, help="what to do")
    parsers = []
    for action, func, help_text, positional in commands:
        p = gsub.add_parser(action, help=help_text)
        if positional is not None:
            p.add_argument(positional[0], help=positional[1])
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="print one JSON value")
        parsers.append(p)
    return parsers
