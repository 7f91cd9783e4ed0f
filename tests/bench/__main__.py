"""``python -m tests.bench``: run the benchmarks and print the report (docs/benchmarks.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.bench import report
from tests.bench.runner import REPO, SCENARIOS, SIDES, Bench

LARGE = {"regions": 10, "instances": 50, "stock_regions": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--regions", type=int, default=5, help="how many regions (default 5)")
    parser.add_argument("--instances", type=int, default=20, help="instances per region (default 20)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added latency per API call (default 100)")
    parser.add_argument("--structural-latency-ms", type=float, default=1000.0,
                        help="run our side again at this latency and report its depth: at 1 s per call the "
                             "machine's CPU cannot chain calls sent together, so it is the code's order alone "
                             "(default 1000; 0 skips it)")
    parser.add_argument("--large", action="store_true",
                        help=f"the larger run: {LARGE['regions']} regions x {LARGE['instances']} instances")
    parser.add_argument("--stock-regions", type=int, default=None,
                        help="measure the stock way on this many regions only and scale to all (it does one "
                             "region after the other); default all, --large: "
                             f"{LARGE['stock_regions']}")
    parser.add_argument("--sides", default=",".join(SIDES), help="ours,stock (default both)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    parser.add_argument("--out", default=str(REPO / "build" / "bench"), help="report directory (default build/bench)")
    args = parser.parse_args(argv)
    if args.large:
        args.regions, args.instances = LARGE["regions"], LARGE["instances"]
        if args.stock_regions is None:
            args.stock_regions = LARGE["stock_regions"]
    sides = tuple(s for s in args.sides.split(",") if s)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    unknown = (set(sides) - set(SIDES)) | (set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    out = Path(args.out)
    bench = Bench(args.regions, args.instances, args.latency_ms, out, sides=sides, scenarios=scenarios,
                  stock_regions=args.stock_regions, structural_latency_ms=args.structural_latency_ms)
    data = bench.run()
    path = report.write(data, out)
    print(path.read_text(encoding="utf-8"))
    print(f"written: {path} and {out / 'report.json'}")
    return 0 if all(r["ok"] for r in data["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
