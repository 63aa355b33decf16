"""The RL experiments of docs/rl.md, each regenerable by one command:

    python -m studies.rl_experiments idp [--seeds 3] [--workers 2]

runs every variant of the experiment for each seed (one ``snn-control train`` process
per run, ``workers`` at a time, in ``results/rl/runs/NAME/VARIANT_seedS/``; a run whose
``metrics.jsonl`` is complete is kept, and the repository keeps those records, so an
interrupted experiment resumes run by run, across sessions too), then writes ``results/rl/NAME.json`` (per
run and mean +- std per variant), ``results/rl/NAME_curves.png``, merges its headline
figures into ``results/rl/summary.json`` and regenerates the table in ``docs/rl.md``
between its markers (``python -m studies.rl_experiments --table`` does only that last step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE_BEGIN, TABLE_END = "<!-- rl-table: begin (python -m studies.rl_experiments --table) -->", "<!-- rl-table: end -->"


@dataclass(frozen=True)
class Variant:
    name: str  # key in the JSON
    label: str  # for tables and plots
    config: str  # relative to the repository root
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    variants: tuple[Variant, ...]
    score: str  # the metrics.jsonl key whose best value is the run's headline figure
    score_label: str
    summary_keys: dict  # summary.json key -> (variant or "*" for the best variant, statistic)
    held_out: bool = False  # reach task: each finished run (a model directory) is evaluated on
    # the full held-out goal set, as `snn-control eval` does, and shown beside `reference`
    reference: str | None = None  # a shipped predictive-control model directory
    threshold: float | None = None  # report when each run's score first reaches this


def _reach_experiment(task: str, title: str, config: str, reference: str) -> Experiment:
    """Spiking TD3 with and without the classical guide on a reach task, each run's best
    checkpoint held out beside the shipped predictive-control model ``reference``."""
    return Experiment(
        task, f"{title}, 6e4 transitions: spiking TD3 against the shipped predictive-control SNN",
        (Variant("td3_proxy", "SNN TD3, proxy target, fixed k=5 (no guide)", config,
                 ("rl.guide_share=0.0", "rl.bc_weight=0.0")),
         Variant("td3_proxy_guided", "SNN TD3, proxy + guide (jump-start, BC), fixed k=5", config)),
        score="validation/success_rate", score_label="best validation success",
        summary_keys={f"{task}_best_rl_snn_success_rate": ("*", "heldout_success_best"),
                      f"{task}_td3_proxy_success_rate_mean": ("td3_proxy", "heldout_success_mean"),
                      f"{task}_td3_guided_success_rate_mean": ("td3_proxy_guided", "heldout_success_mean")},
        held_out=True, reference=reference)


EXPERIMENTS = {
    "idp": Experiment(
        "idp", "MuJoCo InvertedDoublePendulum-v5, 5e4 transitions (the benchmark of Xu et al. 2025, Proxy Target)",
        # Longest runs first (proxy ~2x Polyak ~3x ANN): two workers then finish together.
        (Variant("proxy_lif", "SNN TD3, proxy target (LIF)", "config/idp_td3.yaml", ("rl.target=proxy",)),
         Variant("polyak_lif", "SNN TD3, Polyak target (LIF)", "config/idp_td3.yaml", ("rl.target=polyak",)),
         Variant("ann", "ANN TD3 (MLP 256-256)", "config/idp_td3.yaml", ("rl.actor=mlp", "rl.target=polyak"))),
        score="eval/return_mean", score_label="max average return",
        summary_keys={"idp_ann_return_mean": ("ann", "mean"), "idp_ann_return_std": ("ann", "std"),
                      "idp_polyak_lif_return_mean": ("polyak_lif", "mean"),
                      "idp_polyak_lif_return_std": ("polyak_lif", "std"),
                      "idp_proxy_lif_return_mean": ("proxy_lif", "mean"),
                      "idp_proxy_lif_return_std": ("proxy_lif", "std")}),
    "reacher": _reach_experiment("reacher", "planar reacher", "config/reacher_td3.yaml", "models/reacher_snn"),
    "panda": _reach_experiment("panda", "PyBullet Panda reach", "config/panda_td3.yaml", "models/panda_snn"),
    "slopes": Experiment(
        "slopes", "planar reacher, guided SNN TD3, 3e4 transitions: surrogate slope k (Van den Berghe et al. 2025)",
        tuple(Variant(name, label, "config/reacher_td3.yaml", ("rl.total_steps=30000", "rl.eval_every=3200", *o))
              for name, label, o in (
                  ("k100", "fixed k=100", ("rl.slope_schedule=fixed", "rl.slope=100.0")),
                  ("k2", "fixed k=2", ("rl.slope_schedule=fixed", "rl.slope=2.0")),
                  ("scheduled", "scheduled k 2->100", ("rl.slope_schedule=scheduled",)),
                  ("adaptive", "adaptive k 2->100 (return -60 -> -20)",
                   ("rl.slope_schedule=adaptive", "rl.adaptive_return_low=-60.0",
                    "rl.adaptive_return_high=-20.0")))),
        score="validation/success_rate", score_label="best validation success",
        summary_keys={f"slopes_{name}_steps_to_half_success_mean": (name, "steps_to_threshold_mean")
                      for name in ("k100", "k2", "scheduled", "adaptive")},
        threshold=0.5),
}


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _total_steps(config: str, overrides: tuple[str, ...]) -> int:
    from snn_control.config import load

    return load(REPO_ROOT / config, list(overrides)).rl.total_steps


def _run_complete(run_dir: Path, total_steps: int) -> bool:
    rows = _read_metrics(run_dir / "metrics.jsonl")
    return bool(rows) and rows[-1]["env_steps"] >= total_steps


def _train(run_dir: Path, config: str, overrides: tuple[str, ...]) -> float:
    """One ``snn-control train`` process; its output goes to ``run_dir/train.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snn_control.cli", "train", str(REPO_ROOT / config), "--out", str(run_dir),
           "--no-progress"] + [a for o in overrides for a in ("--set", o)]
    start = time.perf_counter()
    with open(run_dir / "train.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    if code:
        raise RuntimeError(f"run {run_dir} failed (exit {code}); see {run_dir / 'train.log'}")
    return time.perf_counter() - start


RUNS_ROOT = REPO_ROOT / "results" / "rl" / "runs"  # run records are kept (see .gitignore)


def run_experiment(name: str, seeds: int = 3, workers: int = 2, runs_root: Path = RUNS_ROOT,
                   results_root: Path = REPO_ROOT / "results" / "rl", extra: tuple[str, ...] = (),
                   docs: Path | None = REPO_ROOT / "docs" / "rl.md") -> dict:
    """Run (or resume) experiment ``name`` and write its results; returns the results dict.
    ``extra`` overrides go to every run (e.g. a shorter ``rl.total_steps`` for a smoke test)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    jobs = []
    for seed in range(seeds):  # seed-major: a partial experiment has every variant of seed 0 first
        for v in exp.variants:
            overrides = (*v.overrides, f"seed={seed}", *extra)
            run_dir = Path(runs_root) / name / f"{v.name}_seed{seed}"
            if not _run_complete(run_dir, _total_steps(v.config, overrides)):
                jobs.append((run_dir, v.config, overrides))
    start = time.perf_counter()
    print(f"{name}: {len(jobs)} run(s) to do, {workers} at a time -> {Path(runs_root) / name}", flush=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_train, *job): job[0] for job in jobs}
        for done, future in enumerate(futures, 1):
            seconds = future.result()
            print(f"  [{done}/{len(jobs)}] {futures[future].name}: {seconds / 60:.1f} min", flush=True)
    command = " ".join([f"python -m studies.rl_experiments {name} --seeds {seeds}", *(f"--set {o}" for o in extra)])
    if exp.held_out:
        for seed in range(seeds):
            for v in exp.variants:
                evaluate_held_out(Path(runs_root) / name / f"{v.name}_seed{seed}")
    results = summarise(exp, seeds, Path(runs_root), time.perf_counter() - start, command, workers, len(jobs))
    previous = Path(results_root) / f"{name}.json"
    if not jobs and previous.exists():  # a re-summary keeps the measured wall time of the invocation that ran all
        old = json.loads(previous.read_text())
        if old.get("runs_in_invocation") == old.get("runs_total") == results["runs_total"]:
            results.update(invocation_wall_s=old["invocation_wall_s"], runs_in_invocation=old["runs_in_invocation"],
                           workers=old["workers"])
    write_results(exp, results, Path(results_root), docs)
    return results


def evaluate_held_out(run_dir: Path) -> dict:
    """``snn-control eval`` of a finished run on the full held-out set, cached as
    ``run_dir/heldout.json``: its best-validation checkpoint ``best/`` where the run kept
    one (picked on the trainer's validation goals, never the held-out ones), else its
    final one. The JSON's ``checkpoint`` says which."""
    from snn_control.training.evaluate import evaluate, write_eval

    path = run_dir / "heldout.json"
    if not path.exists():
        model = run_dir / "best" if (run_dir / "best" / "best.json").exists() else run_dir
        result = evaluate(model)
        result["checkpoint"] = ("best validation, env step "
                                f"{json.loads((model / 'best.json').read_text())['env_steps']}"
                                if model != run_dir else "final")
        write_eval(result, path)
    return json.loads(path.read_text())


def summarise(exp: Experiment, seeds: int, runs_root: Path, wall_s: float, command: str, workers: int = 2,
              runs_in_invocation: int = 0) -> dict:
    """Per variant: every run's curve and best score, mean and std over seeds (and the
    held-out evaluation for reach tasks). An interrupted experiment resumes, so one
    invocation's own wall time (``invocation_wall_s``) may cover only part of it: it is the
    experiment's measured wall time when that invocation ran every run
    (``runs_in_invocation == runs_total``); ``wall_s`` is the estimate from the sum of the
    runs' training times over ``workers``."""
    variants = {}
    for v in exp.variants:
        runs = []
        for seed in range(seeds):
            rows = [r for r in _read_metrics(runs_root / exp.name / f"{v.name}_seed{seed}" / "metrics.jsonl")
                    if exp.score in r]
            if not rows:
                continue
            scores = [r[exp.score] for r in rows]
            run = {"seed": seed, "best": float(max(scores)), "final": float(scores[-1]),
                   "env_steps": int(rows[-1]["env_steps"]),
                   "train_wall_s": float(rows[-1].get("time/elapsed_s", float("nan"))),
                   "curve": [[int(r["env_steps"]), float(r[exp.score])] for r in rows]}
            if exp.threshold is not None:
                reached = [r for r in rows if r[exp.score] >= exp.threshold]
                run["steps_to_threshold"] = int(reached[0]["env_steps"]) if reached else None
                run["wall_s_to_threshold"] = float(reached[0]["time/elapsed_s"]) if reached else None
            heldout = runs_root / exp.name / f"{v.name}_seed{seed}" / "heldout.json"
            if exp.held_out and heldout.exists():
                e = json.loads(heldout.read_text())
                run["heldout"] = {k: e[k] for k in ("episodes", "success_rate", "final_distance_median_m",
                                                    "final_distance_p90_m", "parameters")}
                run["heldout"]["checkpoint"] = e.get("checkpoint", "final")
            runs.append(run)
        best = np.array([r["best"] for r in runs])
        entry = {"label": v.label, "config": v.config, "overrides": list(v.overrides), "runs": runs,
                 "seeds": len(runs), "mean": float(best.mean()) if len(best) else None,
                 "std": float(best.std()) if len(best) else None}
        if exp.threshold is not None:
            steps = np.array([r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None])
            entry.update(threshold=exp.threshold, threshold_reached=len(steps),
                         steps_to_threshold_mean=float(steps.mean()) if len(steps) else None,
                         steps_to_threshold_std=float(steps.std()) if len(steps) else None)
        success = np.array([r["heldout"]["success_rate"] for r in runs if "heldout" in r])
        if len(success):
            median = np.array([r["heldout"]["final_distance_median_m"] for r in runs if "heldout" in r])
            entry.update(heldout_success_mean=float(success.mean()), heldout_success_std=float(success.std()),
                         heldout_success_best=float(success.max()),
                         heldout_final_distance_median_mean=float(median.mean()))
        variants[v.name] = entry
    reference = None
    if exp.reference and (REPO_ROOT / exp.reference / "eval.json").exists():
        from snn_control.config import load

        e = json.loads((REPO_ROOT / exp.reference / "eval.json").read_text())
        cfg = load(REPO_ROOT / exp.reference / "config.yaml")
        reference = {"env_steps": cfg.train.iterations * cfg.train.envs * cfg.env.episode_steps,
                     "model": exp.reference, "success_rate": e["success_rate"],
                     "final_distance_median_m": e["final_distance_median_m"], "parameters": e["parameters"],
                     "train_wall_s": e.get("training", {}).get("wall_time_s")}
    return {"reference": reference, "experiment": exp.name, "description": exp.description, "score": exp.score,
            "score_label": exp.score_label, "command": command,
            "invocation_wall_s": wall_s, "workers": workers, "runs_in_invocation": runs_in_invocation,
            "runs_total": sum(len(v["runs"]) for v in variants.values()),
            "wall_s": sum(r["train_wall_s"] for v in variants.values() for r in v["runs"]) / workers,
            "variants": variants}


def write_results(exp: Experiment, results: dict, results_root: Path, docs: Path | None) -> None:
    results_root.mkdir(parents=True, exist_ok=True)
    (results_root / f"{exp.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_curves(results, results_root / f"{exp.name}_curves.png")
    summary_path = results_root / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for key, (variant, stat) in exp.summary_keys.items():
        values = [v.get(stat) for name, v in results["variants"].items() if variant in ("*", name)]
        values = [x for x in values if x is not None]
        summary[key] = max(values) if values else None
    summary[f"{exp.name}_seeds"] = min(v["seeds"] for v in results["variants"].values())
    summary_path.write_text(json.dumps(dict(sorted(summary.items())), indent=2) + "\n")
    if docs is not None:
        update_docs_table(docs, results_root)


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, v in results["variants"].items():
        if not v["runs"]:
            continue
        steps = sorted({s for r in v["runs"] for s, _ in r["curve"]})
        table = np.array([[dict(map(tuple, r["curve"])).get(s, np.nan) for s in steps] for r in v["runs"]])
        mean, std = np.nanmean(table, 0), np.nanstd(table, 0)
        ax.plot(steps, mean, label=f"{v['label']} ({v['seeds']} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("environment transitions")
    ax.set_ylabel(results["score"])
    ax.set_title(results["description"], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def experiment_wall(res: dict) -> str:
    if res.get("runs_total") and res.get("runs_in_invocation") == res["runs_total"]:
        return f"{res['invocation_wall_s'] / 60:.0f} min measured, one invocation, {res['workers']} runs at a time"
    return f"{res['wall_s'] / 60:.0f} min estimated (sum of run times / {res['workers']} workers)"


def rl_table(results_root: Path = REPO_ROOT / "results" / "rl") -> str:
    """Markdown tables of every experiment's results JSON under ``results_root``: the
    headline per variant, and for reach tasks the held-out evaluation beside the
    predictive-control reference."""
    lines = ["| experiment | variant | seeds | headline (best per run, mean ± std) | per seed | "
             "train wall time per run | experiment wall time |", "|---|---|---|---|---|---|---|"]
    threshold = ["", "| experiment | variant | seeds reaching the threshold | transitions to it (mean ± std) | "
                 "wall time to it (mean) |", "|---|---|---|---|---|"]
    reach = ["", "| experiment | controller | held-out success (mean ± std over seeds; best) | median final "
             "distance | parameters | environment transitions | train wall time |", "|---|---|---|---|---|---|---|"]
    for name in EXPERIMENTS:  # other JSON there (summary, imitation) is not an experiment's
        path = results_root / f"{name}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        reach_rows = []
        for v in res["variants"].values():
            if not v["runs"]:
                continue
            f = ".1f" if abs(v["mean"]) >= 10 else ".3f"  # returns vs success rates
            per_seed = ", ".join(f"{r['best']:{f}}" for r in v["runs"])
            wall = np.mean([r["train_wall_s"] for r in v["runs"]]) / 60
            lines.append(f"| {res['experiment']} | {v['label']} | {v['seeds']} | "
                         f"{res['score_label']} {v['mean']:{f}} ± {v['std']:{f}} | {per_seed} | {wall:.1f} min | "
                         f"{experiment_wall(res)} (`{res['command']}`) |")
            if "threshold" in v:
                done = [r for r in v["runs"] if r["steps_to_threshold"] is not None]
                steps = (f"{v['steps_to_threshold_mean']:,.0f} ± {v['steps_to_threshold_std']:,.0f}" if done
                         else f"not within {v['runs'][0]['env_steps']:,}")
                to_it = f"{np.mean([r['wall_s_to_threshold'] for r in done]) / 60:.1f} min" if done else "n/a"
                threshold.append(f"| {res['experiment']} | {v['label']} | {len(done)}/{v['seeds']} "
                                 f"({res['score']} >= {v['threshold']}) | {steps} | {to_it} |")
            if "heldout_success_mean" in v:
                reach_rows.append(
                    f"| {res['experiment']} | {v['label']} | {v['heldout_success_mean']:.1%} ± "
                    f"{v['heldout_success_std']:.1%}; {v['heldout_success_best']:.1%} | "
                    f"{v['heldout_final_distance_median_mean']:.4f} | {v['runs'][0]['heldout']['parameters']:,} | "
                    f"{v['runs'][0]['env_steps']:,} | {wall:.1f} min |")
        ref = res.get("reference")
        if ref and reach_rows:
            wall = f"{ref['train_wall_s'] / 60:.1f} min" if ref["train_wall_s"] else "n/a"
            reach_rows.append(f"| {res['experiment']} | predictive control, `{ref['model']}` (shipped) | "
                              f"{ref['success_rate']:.1%} | {ref['final_distance_median_m']:.4f} | "
                              f"{ref['parameters']:,} | {ref['env_steps']:,} | {wall} |")
        reach += reach_rows
    return "\n".join(lines + (threshold if len(threshold) > 3 else []) + (reach if len(reach) > 3 else []))


def update_docs_table(docs: Path, results_root: Path) -> None:
    text = docs.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ValueError(f"{docs}: no table markers {TABLE_BEGIN!r} ... {TABLE_END!r}")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    docs.write_text(f"{head}{TABLE_BEGIN}\n{rl_table(results_root)}\n{TABLE_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help=f"experiment: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--table", action="store_true", help="only regenerate the table in docs/rl.md")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="training processes at a time")
    parser.add_argument("--runs", default=None,
                        help="run directories go to RUNS/NAME/VARIANT_seedS/ (default results/rl/runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every run (e.g. rl.total_steps=2000 for a smoke test)")
    args = parser.parse_args(argv)
    if args.table or not args.name:
        update_docs_table(REPO_ROOT / "docs" / "rl.md", REPO_ROOT / "results" / "rl")
        print(rl_table())
        return 0
    results = run_experiment(args.name, seeds=args.seeds, workers=args.workers,
                             runs_root=Path(args.runs) if args.runs else RUNS_ROOT, extra=tuple(args.set))
    for v in results["variants"].values():
        f = ".1f" if abs(v["mean"]) >= 10 else ".3f"  # returns vs success rates
        print(f"{v['label']}: {results['score_label']} {v['mean']:{f}} +- {v['std']:{f}} over {v['seeds']} seeds")
    print(f"wall time {experiment_wall(results)}; wrote results/rl/{args.name}.json, "
          f"results/rl/{args.name}_curves.png, results/rl/summary.json and the table in docs/rl.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
