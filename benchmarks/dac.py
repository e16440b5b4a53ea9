"""Dynamic algorithm configuration benchmarks.

    python benchmarks/dac.py --part quadratic       # paretune dac against the best constant LR
    python benchmarks/dac.py --part dacbench        # DACBench's ToySGD learning-rate benchmark
    python benchmarks/dac.py --part lm              # real training: policies, tuned schedules, PBT

Each part prints its table (with the machine and versions) and appends a record to
``benchmarks/results/dac.jsonl``. ``--part dacbench`` needs dacbench (not a paretune
dependency; see benchmarks/README.md) and skips with a message without it.
"""

from __future__ import annotations

import argparse
import sys

import _dac_dacbench as dacbench_part
import _dac_lm as lm_part
import _dac_quadratic as quadratic_part
import _harness as harness  # benchmarks/ is on sys.path when run as a script

PARTS = ("quadratic", "dacbench", "lm")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _part(argv) == "lm":  # its own options: python benchmarks/dac.py --part lm --help
        return lm_part.main(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=PARTS, required=True)
    d = dacbench_part.Settings()
    parser.add_argument(
        "--instance-set", choices=sorted(dacbench_part.INSTANCE_SETS), default=d.instance_set
    )
    parser.add_argument("--updates", type=int, default=d.updates, help="policy updates")
    parser.add_argument("--batch", type=int, default=d.batch, help="episodes per update")
    parser.add_argument("--algorithm", choices=("ppo", "reinforce"), default=d.algorithm)
    parser.add_argument("--lr", type=float, default=d.lr, help="the policy's Adam lr")
    parser.add_argument("--train-seed", type=int, default=d.train_seed)
    parser.add_argument("--eval-seeds", type=harness.parse_ints, default=list(d.eval_seeds))
    parser.add_argument(
        "--no-record", action="store_true", help="do not append to results/dac.jsonl"
    )
    quadratic = parser.add_argument_group("--part quadratic (see _dac_quadratic.py)")
    quadratic.add_argument(
        "--grid", type=int, default=24, help="constant rates in the sweep (x10 runs = episodes)"
    )
    quadratic.add_argument(
        "--held-out", type=harness.parse_ints, default=list(range(100, 110)), help="seeds"
    )
    quadratic.add_argument("--run-dir", default=None, help="paretune dac's run directory")
    quadratic.add_argument("--seed", type=int, default=0, help="paretune dac's seed")
    args = parser.parse_args(argv)
    if args.part == "quadratic":
        result = quadratic_part.main(args)
        if not args.no_record:
            harness.append_record(
                dacbench_part.RESULTS,
                {
                    **harness.stamp(),
                    "machine": harness.machine(),
                    "versions": harness.versions("numpy", "torch", "optuna", git=True),
                    **result,
                },
            )
        return 0
    if args.part == "dacbench":
        settings = dacbench_part.Settings(
            instance_set=args.instance_set,
            updates=args.updates,
            batch=args.batch,
            algorithm=args.algorithm,
            lr=args.lr,
            train_seed=args.train_seed,
            eval_seeds=tuple(args.eval_seeds),
        )
        return dacbench_part.run(settings, record=not args.no_record)
    return 2


def _part(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--part" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--part="):
            return arg.split("=", 1)[1]
    return None


if __name__ == "__main__":
    sys.exit(main())
