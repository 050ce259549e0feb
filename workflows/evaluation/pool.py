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


def check_poolable(reports: list[dict], runs: list[str]) -> None:
    for run, rep in zip(runs[1:], reports[1:]):
        differs = differences(rep, reports[0])
        if differs:
            raise ValueError(f"{run}: {differs[0]} differs from {runs[0]} (pool prompt sets of one checkpoint "
                             f"at one setting)")
    seeds = [rep["settings"].get("seed") for rep in reports]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"the same prompt set (seed) twice among {seeds}: it would count its prompts twice")


def common_suites(reports: list[dict]) -> list[str]:
    return [s for s in reports[0]["suites"] if all(s in r["suites"] for r in reports)]


def suite_rows(reports: list[dict], suite: str) -> list[dict[str, float]]:
    """The per-prompt score rows of one suite, run after run."""
    return [item["scores"] for r in reports for item in r["suites"][suite]["items"]]


def pool(reports: list[dict], runs: list[str]) -> dict:
    """Pooled ``{suite: {"n", "scores", "ci95", "runs": [{"seed", "n", "scores"}]}}`` of the suites every run has."""
    from workflows.eval import aggregate, bootstrap_ci
    from workflows.evaluation.motion import breakdown

    if not reports:
        raise ValueError("nothing to pool: give two or more eval run directories")
    check_poolable(reports, runs)
    out = {}
    for suite in common_suites(reports):
        rows = suite_rows(reports, suite)
        out[suite] = {"n": len(rows), "scores": aggregate(suite, rows), "ci95": bootstrap_ci(suite, rows),
                      "runs": [{"seed": r["settings"].get("seed"), "n": r["suites"][suite]["n"],
                                "scores": r["suites"][suite]["scores"]} for r in reports]}
        items = [item for r in reports for item in r["suites"][suite]["items"]]
        if suite != "t2i" and all("motion_outcomes" in item for item in items):
            out[suite]["motion_breakdown"] = breakdown([item["motion_outcomes"] for item in items])
    return {"checkpoint": reports[0].get("checkpoint"), "runs": list(runs), "suites": out}


def paired(reports: list[dict], base_reports: list[dict]) -> dict:
    """``{suite: {metric: {"value", "baseline", "diff", "ci95"}}}``: each pooled score minus the baseline runs' on
    the same prompts, with a paired bootstrap interval over the prompts."""
    from workflows.eval import aggregate, bootstrap_ci

    if [r["settings"].get("seed") for r in reports] != [r["settings"].get("seed") for r in base_reports]:
        raise ValueError("--against: give the baseline's runs of the same prompt sets (seeds) in the same order")
    out = {}
    for suite in [s for s in common_suites(reports) if s in common_suites(base_reports)]:
        for rep, brep in zip(reports, base_reports):
            if [it["prompt"] for it in rep["suites"][suite]["items"]] != \
                    [it["prompt"] for it in brep["suites"][suite]["items"]]:
                raise ValueError(f"--against: the {suite} prompts of seed {rep['settings'].get('seed')} differ "
                                 f"(another --num?)")
        rows, base_rows = suite_rows(reports, suite), suite_rows(base_reports, suite)
        value, baseline = aggregate(suite, rows), aggregate(suite, base_rows)
        ci = bootstrap_ci(suite, rows, baseline=base_rows)
        out[suite] = {k: {"value": value[k], "baseline": baseline[k], "diff": value[k] - baseline[k], "ci95": ci[k]}
                      for k in value if k in baseline and k in ci}
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
        if res.get("motion_breakdown"):
            from workflows.evaluation.motion import breakdown_table

            lines += ["What became of the prompted objects (share per prompted motion):", "",
                      breakdown_table(res["motion_breakdown"])]
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
            check_poolable(base_reports, args.against)
            pooled["against"] = {"checkpoint": base_reports[0].get("checkpoint"), "runs": list(args.against),
                                 "differs": differences(reports[0], base_reports[0]),
                                 "suites": paired(reports, base_reports)}
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        storage.write_text(args.out, json.dumps(pooled, indent=1))
    print(pooled_markdown(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
