"""Planner study: BeamVQ and SFP against their base forecaster on the embedded atmosphere, with the training
years cut to 10% and to 100%.

For each fraction the same commands train, with the same seed and step budget (``earthcast fit``, stacked
configs): the base forecaster (``configs/quickstart.yaml``), BeamVQ on it (``configs/planners/beamvq.yaml``),
SFP's world model and SFP's agent (``configs/planners/sfp_world_model.yaml``, ``sfp.yaml``). At 10% three
ablations train as well: a 256-code BeamVQ codebook (the default has 1024), SFP with its reward replaced by
MSE, and BeamVQ with a winner-takes-all candidate loss. Every method then forecasts 5 days from 12 inits every
30 days through the held-out year 2019 (:mod:`planner_eval`): plainly, and planned by beam search over the
whole forecast with each inference critic and with the oracle (the truth reward, for reference only).

    python benchmarks/planner_study.py --out outputs/planner_study          # full study (~1 h on 2 cores)
    python benchmarks/planner_study.py --out outputs/planner_study --quick  # smoke run

Writes ``study.json`` and ``study.md`` (the tables of docs/results.md) in ``--out`` and ends with the BAR
lines: BeamVQ lowers day-1 Z500 RMSE against its base at 10% data; with B = K = 1 the planner's forecast
equals the base model's to 1e-6; the batched search is ≥ 5× faster than the looped reference at B = 8.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_eval import load_batch, plain_forecast, planned_forecast, scorer, scores, timed
from study_runs import train

from earthcast.datasets.store import resolve_store
from earthcast.planners.rewards import CSI, Composite, WeightedMSE
from earthcast.planners.search import BeamSearch, looped_beam_search
from earthcast.training.checkpoints import load_module

TRAIN = {1.0: ("2017-01-01", "2018-11-01T18"), 0.1: ("2017-01-01", "2017-03-08T18")}
"""The default training split of the demo store (before the 60 validation days), and its first 10%."""
CRITICS = ("learned", "spectrum", "conservation", "agreement", "oracle")


def train_all(out: Path, quick: bool) -> tuple[dict[str, Path], dict[str, float]]:
    """Checkpoints and training wall times of every run."""
    base_steps, head_steps = (10, 4) if quick else (1000, 200)
    fractions = (0.1,) if quick else (0.1, 1.0)
    ckpts, seconds = {}, {}
    for f in fractions:
        tag = f"{round(f * 100)}pct"
        data = [f'--data.train=["{TRAIN[f][0]}", "{TRAIN[f][1]}"]', "--model.init_args.free_run_steps=0"]

        def run(
            name: str, configs: list[str], steps: int, extra: list[str] = (), data: list[str] = data
        ) -> None:
            args = [
                *data,
                "--trainer.limit_val_batches=2",
                f"--trainer.max_steps={steps}",
                f"--trainer.val_check_interval={steps}",
                "--trainer.check_val_every_n_epoch=null",
                *extra,
            ]
            ckpts[name], seconds[name] = train(name, out, ["configs/quickstart.yaml", *configs], args)

        run(f"base_{tag}", [], base_steps)
        base = f"--model.init_args.base_checkpoint={ckpts[f'base_{tag}']}"
        run(f"beamvq_{tag}", ["configs/planners/beamvq.yaml"], head_steps, [base])
        run(f"sfpwm_{tag}", ["configs/planners/sfp_world_model.yaml"], head_steps)
        world = f"--model.init_args.world_model_checkpoint={ckpts[f'sfpwm_{tag}']}"
        run(f"sfp_{tag}", ["configs/planners/sfp.yaml"], head_steps, [base, world])
        if f == 0.1 and not quick:
            run(f"beamvq256_{tag}", ["configs/planners/beamvq.yaml"], head_steps,
                [base, "--model.init_args.head.num_codes=256"])  # fmt: skip
            run(f"sfpmse_{tag}", ["configs/planners/sfp.yaml"], head_steps,
                [base, world, '--model.init_args.reward=[{"kind": "mse"}]'])  # fmt: skip
            run(f"beamvqwta_{tag}", ["configs/planners/beamvq.yaml"], head_steps,
                [base, "--model.init_args.candidate_loss=min"])  # fmt: skip
    return ckpts, seconds


def sfp_reward(module, preds: torch.Tensor, batch: dict, lead: int) -> float:
    """SFP's training reward (MSE + CSI95 of |V250|), scored on the test split with the truth after the fact."""
    names = module.manifest.names("state")
    c = names.index("v_component_of_wind_250")
    csi = CSI(
        c, module.reference.threshold(c, 95, "abs"), transform="abs", pool=2, lat_weights=module.lat_weights
    )
    reward = Composite(
        [(WeightedMSE(module.lat_weights, scale=module.normalizer.state_std), 1.0), (csi, 1.0)]
    )
    phys = module.physical(preds[:, lead - 1])
    return float(reward(phys, batch["targets_phys"][:, lead - 1].float()).mean())


def evaluate(out: Path, ckpts: dict[str, Path], quick: bool) -> dict:
    """Forecast and score every method; returns the study's numbers."""
    store = resolve_store("demo:atmosphere")
    n_inits, steps = (2, 4) if quick else (12, 20)
    leads = (4,) if quick else (4, 12, 20)
    inits = pd.date_range("2019-01-01", periods=n_inits, freq="30D")
    results: dict = {"inits": [str(t)[:10] for t in inits], "leads_steps": list(leads), "methods": {}}
    fractions = sorted({name.rsplit("_", 1)[1] for name in ckpts})
    for tag in fractions:
        base = load_module(ckpts[f"base_{tag}"])
        beamvq = load_module(ckpts[f"beamvq_{tag}"])
        reference = beamvq.reference
        batch = load_batch(base, store, inits, steps)
        methods = results["methods"]
        base_preds, base_time = timed(plain_forecast, base, batch, steps)
        methods[f"base_{tag}"] = scores(base, base_preds, batch, reference, leads) | {"seconds": base_time}
        for name in [n for n in ckpts if n.endswith(tag) and not n.startswith(("base", "sfpwm"))]:
            module = load_module(ckpts[name])
            preds, seconds = timed(plain_forecast, module, batch, steps)
            methods[name] = scores(module, preds, batch, reference, leads) | {"seconds": seconds}
            if name.startswith("sfp"):
                methods[name]["test_reward_day1"] = sfp_reward(module, preds, batch, leads[0])
                methods[f"base_{tag}"]["test_reward_day1"] = sfp_reward(module, base_preds, batch, leads[0])
            widths = (1, 2, 4, 8) if name == "beamvq_10pct" and not quick else (4,)
            critics = CRITICS if name in ("beamvq_10pct", "beamvq_100pct") else ("learned", "oracle")
            critics = ("learned", "oracle") if quick else critics
            for critic in critics:
                for width in widths if critic in ("learned", "oracle") else (4,):
                    k = module.head_config.k
                    (preds, result), seconds = timed(planned_forecast, module, batch, steps, critic, width, k)
                    methods[f"{name}+{critic}_B{width}"] = scores(module, preds, batch, reference, leads) | {
                        "seconds": seconds,
                        "candidates_per_sample": result.proposals / n_inits,
                    }
        if tag == "10pct":
            results["bars"] = bars(beamvq, batch, steps, base_preds, quick)
    return results


def bars(beamvq, batch: dict, steps: int, base_preds: torch.Tensor, quick: bool) -> dict:
    """The B = K = 1 equality and the batched search's speed-up over the looped reference (B = 8)."""
    greedy, _ = planned_forecast(beamvq, batch, steps, "spectrum", 1, 1)
    diff = float((greedy - base_preds).abs().max())
    horizon, width, k, n = (1, 8, 10, 2) if quick else (4, 8, 10, 4)
    critic = scorer(beamvq, "learned")

    def searcher(ctx: dict[str, torch.Tensor]) -> tuple:
        """(propose, score) over the samples of ``ctx``, for windows flattened sample-major."""
        parent: list[torch.Tensor] = []
        times = beamvq.valid_times(ctx["time"], horizon)

        def propose(window: torch.Tensor, t: int) -> torch.Tensor:
            rep, n_in = window.shape[0] // ctx["inputs"].shape[0], window.shape[1]
            forcings = ctx["forcings"][:, t : t + n_in + 1].repeat_interleave(rep, 0)
            static = ctx["static"].repeat_interleave(rep, 0)
            parent[:] = [window[:, -1]]
            return beamvq.propose(window, static, forcings, times[:, t].repeat_interleave(rep, 0), k)

        return propose, lambda c, target, t: critic(c, parent[0], target, t)

    sub = {key: v[:n] for key, v in batch.items()}

    def looped() -> torch.Tensor:  # the plain reference: Python loops over samples and beams
        chosen = []
        for i in range(n):
            ctx = {key: v[i : i + 1] for key, v in sub.items()}
            propose, score = searcher(ctx)
            chosen.append(looped_beam_search(propose, score, ctx["inputs"], None, horizon, width, k).chosen)
        return torch.cat(chosen)

    with torch.no_grad():
        search = BeamSearch(horizon, width, k)
        batched, t_batched = timed(lambda: search(*searcher(sub), sub["inputs"]).chosen, repeat=2)
        reference, t_looped = timed(looped, repeat=2)  # best of 2 on both sides
    return {
        "b1k1_max_abs_diff": diff,
        "batched_vs_looped_max_abs_diff": float((batched - reference).abs().max()),
        "batched_s": t_batched,
        "looped_s": t_looped,
        "speedup": t_looped / t_batched,
        "search": {"horizon": horizon, "beam_width": width, "expansions": k, "inits": n},
    }


def table(results: dict) -> str:
    """Markdown: RMSE of Z500/T850/SP/V250 and CSI95 per lead, and wall time, for every method."""
    leads = results["leads_steps"]
    cols = [f"Z500 d{lead / 4:g}" for lead in leads] + [f"T850 d{lead / 4:g}" for lead in leads]
    cols += [f"SP d{leads[0] / 4:g}", f"V250 d{leads[0] / 4:g}", "CSI|V250| d1", "CSI T850a d1", "s"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in results["methods"].items():
        values = [m[f"rmse/geopotential_500/{lead}"] for lead in leads]
        values += [m[f"rmse/temperature_850/{lead}"] for lead in leads]
        values += [m[f"rmse/surface_pressure/{leads[0]}"], m[f"rmse/v_component_of_wind_250/{leads[0]}"]]
        values += [m[f"csi95_absV250/{leads[0]}"], m[f"csi95_T850anom/{leads[0]}"], m["seconds"]]
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in values) + " |")
    return "\n".join(lines)


def recovery(results: dict) -> str:
    """Markdown: how much of the oracle's day-1 Z500 gain over the base model each critic recovers, and the
    cost of each planned forecast against the base model's."""
    day1 = results["leads_steps"][0]
    key = f"rmse/geopotential_500/{day1}"
    lines = ["| planned forecast | Z500 d1 | gain vs base | share of oracle gain | candidates/sample | latency vs base |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in results["methods"].items():
        if "+" not in name or "+oracle" in name:
            continue
        model, rest = name.split("+")
        tag = model.rsplit("_", 1)[1]
        base = results["methods"][f"base_{tag}"]
        oracle = results["methods"].get(f"{model}+oracle_{rest.rsplit('_', 1)[1]}")
        gain = base[key] - m[key]
        share = gain / (base[key] - oracle[key]) if oracle and base[key] != oracle[key] else float("nan")
        lines.append(f"| {name} | {m[key]:.4g} | {gain:+.4g} | {share:.2f} | {m['candidates_per_sample']:.0f} | "
                     f"{m['seconds'] / base['seconds']:.1f}x |")  # fmt: skip
    return "\n".join(lines)


def report(results: dict, seconds: dict[str, float]) -> None:
    """Print the tables, the training wall times and the BAR lines."""
    print(table(results) + "\n\n" + recovery(results))
    print("training wall times (s):", {k: round(v) for k, v in seconds.items()})
    m, b = results["methods"], results["bars"]
    day1 = results["leads_steps"][0]
    ratio = (
        m["beamvq_10pct"][f"rmse/geopotential_500/{day1}"] / m["base_10pct"][f"rmse/geopotential_500/{day1}"]
    )
    diff = b["b1k1_max_abs_diff"]
    lines = [
        ("beamvq_day1_z500_rmse_vs_base_10pct", ratio, "<", 1.0, ratio < 1.0),
        ("planner_B1K1_max_abs_diff_vs_base", diff, "<=", 1e-6, diff <= 1e-6),
        ("batched_search_speedup_B8", b["speedup"], ">=", 5.0, b["speedup"] >= 5.0),
    ]
    for name, value, op, target, ok in lines:
        print(f"BAR {name} {value:.4g} {op} {target:g} {'PASS' if ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/planner_study")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run, not the study")
    p.add_argument("--report", action="store_true", help="print the tables and BARs of --out's study.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.report:
        results = json.loads((out / "study.json").read_text())
        report(results, results["train_seconds"])
        return 0
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    ckpts, seconds = train_all(out, args.quick)
    results = evaluate(out, ckpts, args.quick) | {"train_seconds": seconds, "quick": args.quick}
    (out / "study.json").write_text(json.dumps(results, indent=1))
    (out / "study.md").write_text(table(results) + "\n\n" + recovery(results) + "\n")
    report(results, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
