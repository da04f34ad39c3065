"""Size, checksum and surrogate fidelity of the shipped tables (benchmarks/tables/*.parquet).

    python benchmarks/tables.py [SPACE ...]

Per table: configurations with every seed, trials, CPU seconds the table cost, the sha256
(checked against the .sha256 file beside it), and the surrogate's fidelity on held-out
configurations (20%): Spearman rank correlation of the final metric (target >= 0.8) and of the
trial's seconds, beside the table's own seed-to-seed Spearman (the ceiling a deterministic
surrogate can reach).
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.spec import load_spec
from harness.surrogate import fidelity
from harness.tabulate import read_table, sha256

SPACES = ("gflownet-quick", "diffusion-quick", "locoprop-quick")


def main(spaces: list[str]) -> None:
    print(f"{'table':16} {'configs':>7} {'trials':>6} {'cpu_s':>7} {'spearman':>8} {'seconds':>8} "
          f"{'seed-seed':>9} {'test':>4}  sha256")
    for space in spaces:
        path = Path("benchmarks/tables") / f"{space}.parquet"
        if not path.exists():
            print(f"{space:16} missing: harness tabulate {space}")
            continue
        digest = sha256(path)
        want = Path(str(path) + ".sha256")
        ok = want.exists() and want.read_text().split()[0] == digest
        df = read_table(path)
        finals = df[df["kind"] == "final"]
        seeds = finals["seed"].nunique()
        full = int((finals.groupby("config")["seed"].nunique() >= seeds).sum())
        f = fidelity(load_spec(space), df)
        print(f"{space:16} {full:7d} {len(finals):6d} {finals['elapsed_s'].sum():7.0f} {f['spearman_final']:8.3f} "
              f"{f['spearman_seconds']:8.3f} {f['seed_to_seed']:9.3f} {f['test_configs']:4d}  "
              f"{digest[:16]}{'' if ok else ' (checksum file differs!)'}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SPACES))
