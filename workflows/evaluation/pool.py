"""Pool several ``workflows.eval`` runs of one checkpoint (other prompt sets: ``--seed``) into one table.

Each run's ``eval.json`` keeps the per-prompt scores; pooling concatenates them, scores the union the way the eval
does (:func:`workflows.eval.aggregate`) and draws 95 % bootstrap intervals over all the prompts
(:func:`workflows.eval.bootstrap_ci`). Only runs that differ in the prompt-set seed pool: another checkpoint,
sampler or video length is a one-line error naming the key.

    python -m workflows.evaluation.pool runs/eval/small-s0 runs/eval/small-s1 --out runs/eval/small-pooled.json
"""

from __future__ import annotations

import argparse
import json
import sys

from lumos import storage

#: settings that may differ between pooled runs: the prompt set (and sampling) seed, the run's batch size and
#: whether references were drawn (neither changes a model score)
FREE_SETTINGS = ("seed", "batch", "references")


def read_report(run: str) -> dict:
    """The ``eval.json`` of a run directory (or the file itself)."""
    uri = run if run.endswith(".json") else storage.join(run, "eval.json")
    if not storage.exists(uri):
        raise ValueError(f"{run}: no eval.json (run python -m workflows.eval --out {run} first)")
    return json.loads(storage.read_text(uri))


def check_poolable(reports: list[dict], runs: list[str]) -> None:
    first = reports[0]
    for run, rep in zip(runs[1:], reports[1:]):
        if rep.get("checkpoint") != first.get("checkpoint"):
            raise ValueError(f"{run}: checkpoint {rep.get('checkpoint')} is not {first.get('checkpoint')} "
                             f"(pool prompt sets of one checkpoint)")
        for key in sorted(set(first["settings"]) | set(rep["settings"])):
            if key not in FREE_SETTINGS and first["settings"].get(key) != rep["settings"].get(key):
                raise ValueError(f"{run}: settings.{key} = {rep['settings'].get(key)!r}, "
                                 f"not {first['settings'].get(key)!r} as in {runs[0]}")
    seeds = [rep["settings"].get("seed") for rep in reports]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"the same prompt set (seed) twice among {seeds}: it would count its prompts twice")


def pool(reports: list[dict], runs: list[str]) -> dict:
    """Pooled ``{suite: {"n", "scores", "ci95", "runs": [{"seed", "n", "scores"}]}}`` of the suites every run has."""
    from workflows.eval import aggregate, bootstrap_ci

    if not reports:
        raise ValueError("nothing to pool: give two or more eval run directories")
    check_poolable(reports, runs)
    suites = [s for s in reports[0]["suites"] if all(s in r["suites"] for r in reports)]
    out = {}
    for suite in suites:
        rows = [item["scores"] for r in reports for item in r["suites"][suite]["items"]]
        out[suite] = {"n": len(rows), "scores": aggregate(suite, rows), "ci95": bootstrap_ci(suite, rows),
                      "runs": [{"seed": r["settings"].get("seed"), "n": r["suites"][suite]["n"],
                                "scores": r["suites"][suite]["scores"]} for r in reports]}
    return {"checkpoint": reports[0].get("checkpoint"), "runs": list(runs), "suites": out}


def pooled_markdown(pooled: dict) -> str:
    """One table per suite: metric, pooled score [95 % CI], then each run's own score."""
    lines = [f"# Pooled evaluation of `{pooled['checkpoint']}`", ""]
    for suite, res in pooled["suites"].items():
        seeds = [f"seed {r['seed']} ({r['n']})" for r in res["runs"]]
        lines += [f"## {suite} ({res['n']} prompts)", "",
                  "| metric | pooled [95 % CI] | " + " | ".join(seeds) + " |", "|---|---|" + "---|" * len(seeds)]
        for key, value in res["scores"].items():
            lo, hi = res["ci95"].get(key, [float("nan")] * 2)
            runs = " | ".join(f"{r['scores'].get(key, float('nan')):.3f}" for r in res["runs"])
            lines.append(f"| {key} | {value:.3f} [{lo:.2f}, {hi:.2f}] | {runs} |")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflows.evaluation.pool", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m workflows.evaluation.pool runs/eval/s0 runs/eval/s1")
    p.add_argument("runs", nargs="+", help="eval output directories (or their eval.json), local or s3://")
    p.add_argument("--out", default=None, help="also write the pooled scores as JSON to this URI")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pooled = pool([read_report(r) for r in args.runs], args.runs)
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        storage.write_text(args.out, json.dumps(pooled, indent=1))
    print(pooled_markdown(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
