"""Where the disagreement figures are cheapest: inside the fused graph, or in numpy after it.

    python bench/answer_cost.py [--seconds 3] [--rounds 3]

On the serving benchmark's ensemble (CIFAR-10 ResNet-20, 5 snapshots; bench/serve_load.py
builds it the first time), per batch of 1 and of 32 images, in interleaved rounds:
- `graph only`: one session.run returning the probabilities (no figures; the limit);
- `graph + numpy`: the same, then snapens.ensemble.combine (the vectorised contract);
- `in graph`: one session.run returning the probabilities and every figure
  (server.fused_figures), what the server runs.
Prints the median time per batch, what the figures add to the graph alone, and the
largest difference between the two ways' figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_load import BENCH_MODEL, BENCH_REPO, ensure_model, fused_session

from server.fused_figures import ANSWER_OUTPUTS
from server.fusion import MEMBER_PROBABILITIES, PROBABILITIES, TRAINED_MEMBER_PROBABILITIES
from snapens.ensemble import DISAGREEMENT_FIGURES, combine


def per_call_us(call: Callable[[], object], seconds: float) -> float:
    """Median microseconds of call(), run back to back for `seconds`."""
    call()
    times = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    folder = ensure_model(BENCH_REPO, BENCH_MODEL)
    plain, answering = fused_session(folder), fused_session(folder, answer=True)
    name = plain.get_inputs()[0].name
    outputs = [MEMBER_PROBABILITIES, PROBABILITIES]
    if TRAINED_MEMBER_PROBABILITIES in {o.name for o in plain.get_outputs()}:
        outputs.append(TRAINED_MEMBER_PROBABILITIES)  # the members at temperature 1
    rng = np.random.default_rng(0)

    for batch in (1, 32):
        feed = {name: rng.uniform(0, 255, (batch, 3, 32, 32)).astype(np.float32)}

        def graph_only(feed: dict[str, np.ndarray] = feed) -> object:
            return plain.run(outputs, feed)

        def graph_numpy(feed: dict[str, np.ndarray] = feed) -> object:
            member_probs, mean, *trained = plain.run(outputs, feed)
            return combine(member_probs, mean=mean, trained=trained[0] if trained else None)

        def in_graph(feed: dict[str, np.ndarray] = feed) -> object:
            return answering.run([*outputs, *ANSWER_OUTPUTS], feed)

        ways = {"graph only": graph_only, "graph + numpy": graph_numpy, "in graph": in_graph}
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way, call in ways.items():
                samples[way].append(per_call_us(call, args.seconds))
        median = {way: statistics.median(values) for way, values in samples.items()}

        member_probs, mean, *rest = answering.run([*outputs, *ANSWER_OUTPUTS], feed)
        trained = rest[0] if len(outputs) > 2 else None
        expected = combine(member_probs, mean=mean, trained=trained)
        got = dict(zip(ANSWER_OUTPUTS, rest[len(outputs) - 2 :], strict=True))
        worst = max(
            float(np.abs(got[f] - getattr(expected, f)).max())
            for f in ("confidence", *DISAGREEMENT_FIGURES)
        )
        print(f"\nbatch {batch} ({args.rounds} rounds of {args.seconds:g} s, medians)")
        print("| way | µs per batch | figures' cost |")
        print("|---|---|---|")
        for way, us in median.items():
            extra = us - median["graph only"]
            share = f"{extra:+.0f} µs ({extra / median['graph only']:+.1%})" if extra else "-"
            print(f"| {way} | {us:.0f} | {share} |")
        print(f"largest difference between the two ways' figures: {worst:.1e}")


if __name__ == "__main__":
    main()
