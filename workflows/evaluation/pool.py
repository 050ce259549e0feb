"""Pool several ``workflows.eval`` runs of one checkpoint (other prompt sets: ``--seed``) into one table.

Each run's ``eval.json`` keeps the per-prompt scores; pooling concatenates them, scores the union the way the eval
does (:func:`workflows.eval.aggregate`) and draws 95 % bootstrap intervals over all the prompts
(:func:`workflows.eval.bootstrap_ci`). Only runs that differ in the prompt-set seed pool: another checkpoint,
sampler or video length is a one-line error naming the key.

    python -m workflows.evaluation.pool runs/eval/small-s0 runs/eval/small-s1 --out runs/eval/small-pooled.json

``--against`` pools a second checkpoint's runs of the same prompt sets and compares the two prompt by prompt: the
difference of each score with a paired bootstrap interval (the same resampled prompts for both), which separates a
real change from the spread of the prompts far better than two overlapping intervals do.
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


def differences(report: dict, base: dict) -> list[str]:
    """What differs between two runs beyond the prompt-set seed: ``checkpoint`` and ``settings.<key>`` names."""
    out = ["checkpoint"] if report.get("checkpoint") != base.get("checkpoint") else []
    sa, sb = report["settings"], base["settings"]
    for key in sorted(set(sa) | set(sb)):
        if key in FREE_SETTINGS:
            continue
        if isinstance(sa.get(key), dict) and isinstance(sb.get(key), dict):
            out += [f"settings.{key}.{k}" for k in sorted(set(sa[key]) | set(sb[key])) if sa[key].get(k) != sb[key].get(k)]
        elif sa.get(key) != sb.get(key):
            out.append(f"settings.{key}")
    return out


def paired(pooled: dict, reports: list[dict], base: dict, base_reports: list[dict], resamples: int = 1000,
           seed: int = 0) -> dict:
    """``{suite: {metric: {"value", "baseline", "diff", "ci95"}}}``: each score of ``pooled`` minus the baseline's on
    the same prompts, with a paired percentile-bootstrap interval over the prompts."""
    import numpy as np

    from workflows.eval import aggregate

    if [r["settings"].get("seed") for r in reports] != [r["settings"].get("seed") for r in base_reports]:
        raise ValueError("--against: give the baseline's runs of the same prompt sets (seeds) in the same order")
    out = {}
    for suite in [s for s in pooled["suites"] if s in base["suites"]]:
        rows, base_rows = [], []
        for rep, brep in zip(reports, base_reports):
            items, bitems = rep["suites"][suite]["items"], brep["suites"][suite]["items"]
            if [it["prompt"] for it in items] != [it["prompt"] for it in bitems]:
                raise ValueError(f"--against: the {suite} prompts of seed {rep['settings'].get('seed')} differ "
                                 f"(another --num?)")
            rows += [it["scores"] for it in items]
            base_rows += [it["scores"] for it in bitems]
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(resamples):
            idx = rng.integers(0, len(rows), len(rows))
            a, b = aggregate(suite, [rows[i] for i in idx]), aggregate(suite, [base_rows[i] for i in idx])
            draws.append({k: a[k] - b[k] for k in a if k in b})
        value, baseline = aggregate(suite, rows), aggregate(suite, base_rows)
        out[suite] = {}
        for key in [k for k in value if k in baseline]:
            vals = np.array([d[key] for d in draws if key in d], dtype=float)
            out[suite][key] = {"value": value[key], "baseline": baseline[key], "diff": value[key] - baseline[key],
                               "ci95": [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]}
    return out


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
    if pooled.get("against"):
        differs = ", ".join(pooled["against"]["differs"]) or "nothing but the runs"
        lines += [f"# Paired against `{pooled['against']['checkpoint']}` (same prompts; differs: {differs})", ""]
        for suite, metrics in pooled["against"]["suites"].items():
            lines += [f"## {suite}", "", "| metric | this | baseline | difference [paired 95 % CI] |", "|---|---|---|---|"]
            lines += [f"| {k} | {m['value']:.3f} | {m['baseline']:.3f} | {m['diff']:+.3f} [{m['ci95'][0]:+.3f}, "
                      f"{m['ci95'][1]:+.3f}] |" for k, m in metrics.items()]
            lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflows.evaluation.pool", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m workflows.evaluation.pool runs/eval/s0 runs/eval/s1")
    p.add_argument("runs", nargs="+", help="eval output directories (or their eval.json), local or s3://")
    p.add_argument("--against", nargs="+", default=None, metavar="RUN",
                   help="another checkpoint's eval runs of the same prompt sets: paired differences")
    p.add_argument("--out", default=None, help="also write the pooled scores as JSON to this URI")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        reports = [read_report(r) for r in args.runs]
        pooled = pool(reports, args.runs)
        if args.against:
            base_reports = [read_report(r) for r in args.against]
            base = pool(base_reports, args.against)
            pooled["against"] = {"checkpoint": base["checkpoint"], "runs": list(args.against),
                                 "differs": differences(reports[0], base_reports[0]),
                                 "suites": paired(pooled, reports, base, base_reports)}
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        storage.write_text(args.out, json.dumps(pooled, indent=1))
    print(pooled_markdown(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
