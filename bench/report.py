"""The tables of docs/performance.md, from bench/results/*.json.

    python bench/report.py [--quick]     # Markdown to stdout (--quick: the smoke results)
"""

from __future__ import annotations

import json

from _common import RESULTS, parser


def _load(name: str, quick: bool) -> dict | None:
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _source(r: dict) -> str:
    m = r["machine"]
    gpu = f" and an {r['gpu']}" if r.get("gpu") else ""
    return f"`{r['command']}` on {m['cores']}-core {m['cpu']}{gpu}, {r['date'][:10]}"


def _control_loop_table(r: dict | None, title: str) -> list[str]:
    if not r:
        return []
    out = [title, "",
           "| policy rate Hz | ticks | period p50 ms | period p99 ms | compute p99 us | deadline misses | stale events "
           "| commands (1 kHz) | command period p99 ms | commands > 1 ms late |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        late = f"{100 * run['command_late_rate']:.2f} %" if "command_late_rate" in run else "-"
        out.append(f"| {run['rate_hz']:g} | {run['ticks']} | {run['period_p50_ms']:.2f} | {run['period_p99_ms']:.2f} | "
                   f"{run['compute_p99_us']:.0f} | {100 * run['deadline_miss_rate']:.2f} % | {run.get('stale_events', '-')} "
                   f"| {run.get('commands', '-')} | {run.get('command_period_p99_ms', float('nan')):.2f} | {late} |")
    return out + ["", _source(r), ""]


def _train_step_table(r: dict, title: str) -> list[str]:
    paths = [p for p in ("fused", "compiled") if f"predictor_{p}_s" in r]
    mix = r["iteration_updates"]
    total = lambda path: sum(n * r[f"{k}_{path}_s"] for k, n in mix.items())  # noqa: E731
    out = [title, "", "| update | reference s | " + " | ".join(
        f"{p} s (speedup, max relative gradient difference)" for p in paths) + " |", "|---|---|" + "---|" * len(paths)]
    for kind in ("predictor", "policy"):
        out.append(f"| {kind} | {r[f'{kind}_reference_s']:.2f} | " + " | ".join(
            f"{r[f'{kind}_{p}_s']:.2f} ({r[f'{kind}_{p}_speedup']:.1f}x, {r[f'{kind}_{p}_max_rel_grad_diff']:.0e})"
            for p in paths) + " |")
    out.append(f"| one training iteration's updates ({mix['predictor']} predictor + {mix['policy']} policy) | "
               f"{total('reference'):.1f} | " + " | ".join(
                   f"{total(p):.1f} ({total('reference') / total(p):.1f}x)" for p in paths) + " |")
    gpu = r.get("gpu")
    memory = (f"Peak CUDA memory allocated during one predictor + one policy update: "
              + ", ".join(f"{p} {r[f'{p}_peak_cuda_mb'] / 1024:.2f} GB" for p in ("reference", *paths))
              + (f"; the most the CUDA allocator held over the whole run (every path, CUDA graphs' pools "
                 f"included): {r['max_reserved_cuda_mb'] / 1024:.2f} GB"
                 if "max_reserved_cuda_mb" in r else "")
              if gpu else "Peak memory (one predictor + one policy update, fresh process): "
              + ", ".join(f"{p} {r[f'{p}_peak_rss_mb'] / 1024:.2f} GB" for p in ("reference", *paths)))
    where = f"On {gpu}, the same batch every update (a fixture). " if gpu else ""
    out += ["", f"{where}Batch {r['batch']}, {r['warmup']} + {r['unroll']} steps, {r['substeps']} substeps, "
            f"2 x {r['hidden']} ALIF, rank {r['rank']}, {r['threads']} thread(s); each time the median of "
            f"{r['repeats']} updates. Compiled path ran compiled: {r['compiled']}; its first predictor and policy "
            f"updates (compiling) took {r.get('first_compiled_updates_incl_compile_s', float('nan')):.0f} s. "
            f"{memory}.", "", _source(r), ""]
    return out


def _profile_table(r: dict) -> list[str]:
    out = [f"### train_step_profile (one update under torch.profiler, {r['surrogate']} surrogate; ms of CPU time)", "",
           "| update | path | wall s | matrix products ms (count) | compiled forward loops ms | "
           "compiled backward loops ms | copies ms | rest ms |", "|---|---|---|---|---|---|---|---|"]
    for key in (k for k in r if k.startswith(("predictor_", "policy_")) and isinstance(r[k], dict)):
        kind, path = key.split("_", 1)
        b = r[key]
        out.append(f"| {kind} | {path} | {b['update_s']:.2f} | {b['matrix_products_ms']:.0f} ({b['matrix_products']}) | "
                   f"{b['compiled_forward_loops_ms']:.0f} | {b['compiled_backward_loops_ms']:.0f} | "
                   f"{b['copies_ms']:.0f} | {b['rest_ms']:.0f} |")
    out += ["", f"Batch {r['batch']}, {r['warmup']} + {r['unroll']} steps, {r['substeps']} substeps, "
            f"2 x {r['hidden']} ALIF, rank {r['rank']}, {r['threads']} thread(s); one profiled update each, "
            "after the warm-up updates.", "", _source(r), ""]
    return out


def tables(quick: bool) -> str:
    out = []
    r = _load("controller_step", quick)
    if r:
        out += ["### controller_step (batch 1, one thread, predictor + policy per control step)", "",
                "| model | p50 us | p99 us | p99.9 us | reference p99 us | speedup p99 | spikes identical | max output diff |",
                "|---|---|---|---|---|---|---|---|"]
        for m in r["models"].values():
            pred = m.get("predictor_substeps", m["substeps"])  # older results: one S for both nets
            s = f"S={m['substeps']}" if pred == m["substeps"] else f"S={m['substeps']} policy, {pred} predictor"
            out.append(f"| {m['model']} ({m['hidden']} x 2, {s}) | {m['p50_us']:.0f} | {m['p99_us']:.0f} | "
                       f"{m['p999_us']:.0f} | {m['reference_p99_us']:.0f} | {m['speedup_p99']:.1f}x | "
                       f"{m['spikes_identical']} | {m['max_abs_output_diff']:.1e} |")
        out += ["", _source(r), ""]
    r = _load("actor_step", quick)
    if r:
        out += ["### actor_step (a TD3 spiking actor, batch 1, one thread, one action)", "",
                "| actor | layers | p50 us | p99 us | p99.9 us | reference p99 us | speedup p99 | spike counts identical | max action diff |",
                "|---|---|---|---|---|---|---|---|---|"]
        out.append(f"| {r['actor']} | {' x '.join(map(str, r['layer_sizes']))}, T={r['timesteps']} | {r['p50_us']:.0f} | "
                   f"{r['p99_us']:.0f} | {r['p999_us']:.0f} | {r['reference_p99_us']:.0f} | {r['speedup_p99']:.1f}x | "
                   f"{r['spike_counts_identical']} | {r['max_abs_action_diff']:.1e} |")
        out += ["", _source(r), ""]
    r = _load("td3_update", quick)
    if r:
        out += ["### td3_update (one TD3 update with the spiking actor, InvertedDoublePendulum)", "",
                "| target | threads | reference ms (stepped actor) | fast ms (layer by layer) | speedup | "
                "max relative actor-gradient difference (float64) |", "|---|---|---|---|---|---|",
                f"| {r['target']} | {r['threads']} | {r['reference_ms_per_update']:.1f} | "
                f"{r['fast_ms_per_update']:.1f} | {r['speedup']:.2f}x | {r['actor_grad_max_rel_diff_float64']:.1e} |",
                "", _source(r), ""]
    for name, title in (("train_step", "### train_step (one update, the trainer's own code)"),
                        ("train_step_cuda", "### train_step on a GPU (the same updates, `--device cuda`)"),
                        ("train_step_cuda_reduce_overhead", "### train_step on a GPU with CUDA graphs "
                         "(`--device cuda --compile-mode reduce-overhead`)")):
        r = _load(name, quick)
        if r:
            out += _train_step_table(r, title)
    for name in ("train_step_profile", "train_step_profile_fast_sigmoid"):
        r = _load(name, quick)
        if r:
            out += _profile_table(r)
    r = _load("collect", quick)
    if r:
        out += ["### collect (Panda, SNN policy in the loop)", "",
                f"{r['envs']} envs: {r['steps_per_s']:.0f} control steps/s with {r['workers']} worker processes, "
                f"{r['reference_steps_per_s']:.0f} in one process ({r['speedup']:.2f}x); "
                f"episodes identical: {r['episodes_identical']}.", "", _source(r), ""]
    for name, title in (("control_loop", "### control_loop (snn_controller node, simulator in another process, over DDS)"),
                        ("control_loop_realtime", "### control_loop with `realtime_priority` 50 (the command loop under SCHED_FIFO)")):
        out += _control_loop_table(_load(name, quick), title)
    rows = [(name, _load(name, quick)) for name in ("control_loop_listener", "control_loop_listener_multithreaded")]
    if all(r for _, r in rows):
        out += ["### control_loop with one more Python subscriber (as RViz, a recorder or a test add)", "",
                "| nodes' rclpy executor | period p99 ms | deadline misses | stale joint-state events |", "|---|---|---|---|"]
        for _, r in rows:
            run = r["runs"][0]
            kind = "single-threaded (shipped)" if r["executor_threads"] == 1 else f"multi-threaded ({r['executor_threads']} threads)"
            out.append(f"| {kind} | {run['period_p99_ms']:.1f} | {100 * run['deadline_miss_rate']:.2f} % | {run['stale_events']} |")
        out += [""] + [_source(r) for _, r in rows] + [""]
    r = _load("energy", quick)
    if r:
        out += ["### energy (per control step; " + f"{r['pj_per_accumulate']} pJ per accumulate, "
                f"{r['pj_per_mac']} pJ per MAC: {r['energy_source']})", "",
                "| model | firing rates Hz (predictor; policy) | synaptic events | dense MACs | SNN nJ | equal-size ANN nJ |",
                "|---|---|---|---|---|---|"]
        for name, m in r["models"].items():
            ev = m["predictor"]["spike_events_per_step"] + m["policy"]["spike_events_per_step"]
            macs = m["predictor"]["dense_macs_per_step"] + m["policy"]["dense_macs_per_step"]
            out.append(f"| {name} | {m['predictor']['firing_rate_hz']}; {m['policy']['firing_rate_hz']} | {ev:.0f} | "
                       f"{macs:.0f} | {m['snn_energy_nj_per_step']:.0f} | {m['equal_size_ann_energy_nj_per_step']:.0f} |")
        out += ["", f"The GRU + MLP baseline (`panda_gru`): {sum(r['panda_gru_baseline_macs_per_step'].values()):,} MACs, "
                f"{r['panda_gru_baseline_energy_nj_per_step']:.0f} nJ per control step.", "", _source(r), ""]
    for name in ("time_to_skill", "time_to_skill_reacher", "time_to_skill_panda"):
        r = _load(name, quick)
        if r:
            out += [f"### {name}", ""]
            for task, run in r["runs"].items():
                hit = run["time_to_threshold_s"]
                out.append(f"- {task}: " + (f"{hit / 60:.1f} min to {r['threshold']:.0%} validation success "
                                            f"(iteration {run['iterations_to_threshold']})" if hit is not None else
                                            f"never reached {r['threshold']:.0%} (best {run['best_validation_success_rate']:.0%})")
                           + ("; training stopped there" if run["iterations_run"] == run["iterations_to_threshold"]
                              else f"; {run['total_train_s'] / 60:.1f} min for all {run['iterations_run']} iterations"))
            out += ["", _source(r), ""]
    return "\n".join(out)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    print(tables(args.quick))


if __name__ == "__main__":
    main()
