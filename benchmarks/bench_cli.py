"""How fast the commands answer ``--help`` and a shell-completion query (goal: under 1.5 s each),
side by side with importing torch, timm and Lightning (what every command loaded before).

    python benchmarks/bench_cli.py [--repeats 5]

Each command runs in a fresh interpreter; the table shows the median wall time of the repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

GOAL_S = 1.5


def _entry(call: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {call}; sys.exit(main())", *args]


CASES: list[tuple[str, list[str], dict[str, str]]] = [
    ("pocketnet --help", _entry("pocketnet.cli import main", "--help"), {}),
    (
        "pocketnet stage=student kd=multi_step --help",
        _entry("pocketnet.cli import main", "stage=student", "kd=multi_step", "--help"),
        {},
    ),
    (
        "completion: pocketnet kd=embedding kd.w<TAB>",
        _entry("pocketnet.cli import main", "-sc", "query=bash"),
        {"COMP_LINE": "pocketnet kd=embedding kd.w"},
    ),
    ("pocketnet-eval --help", _entry("pocketnet.cli import eval_main as main", "--help"), {}),
    ("pocketnet-data --help", _entry("pocketnet.data.cli import main", "--help"), {}),
    ("pocketnet-report --help", _entry("pocketnet.report import main", "--help"), {}),
    ("pocketnet --version", _entry("pocketnet.cli import main", "--version"), {}),
]
HEAVY = "import torch, timm, lightning"
BASELINE = (HEAVY, [sys.executable, "-c", HEAVY])


def _seconds(cmd: list[str], env: dict[str, str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    base = _seconds(BASELINE[1], {}, repeats)
    width = max(len(name) for name, _, _ in CASES)
    print(f"{'command':<{width}}  {'median s':>8}  {'x import':>8}  goal {GOAL_S} s")
    print(f"{BASELINE[0]:<{width}}  {base:8.2f}  {1.0:8.2f}")
    slow = []
    for name, cmd, env in CASES:
        s = _seconds(cmd, env, repeats)
        print(f"{name:<{width}}  {s:8.2f}  {s / base:8.2f}  {'ok' if s < GOAL_S else 'SLOW'}")
        if s >= GOAL_S:
            slow.append(name)
    print(f"{repeats} runs each; " + (f"over the goal: {', '.join(slow)}" if slow else "all ok"))


if __name__ == "__main__":
    main()
