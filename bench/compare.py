"""Per-group ratios vs lstm_fast from a pytest-benchmark JSON file.

    python -m pytest bench --benchmark-only --benchmark-json=out.json
    python bench/compare.py out.json

Prints the table of `python -m lstm_fast bench`: median and min per call
(per step for streaming cases), GFLOP/s with %peak against the run's
matmul yardstick (test_matmul_yardstick; without it, GFLOP/s only), and
ratio = peer median / lstm_fast median (> 1: lstm_fast is faster).
pytest-benchmark times each benchmark on its own, one after another (not
interleaved, the yardstick once for the run), so these ratios and
percentages drift with the machine more than the CLI's. The check column
says "ok" for a benchmark whose checks all passed (it marks itself so after
its last assert) and "UNCHECKED" otherwise, which makes the exit status 1.
"""
import argparse
import json
import sys
from collections import defaultdict

from lstm_fast import bench as lb


def yardstick(data):
    """(GFLOP/s, how it ran) of the run's matmul yardstick, or None."""
    for entry in data["benchmarks"]:
        info = entry.get("extra_info", {})
        if "yardstick" in info and entry["stats"]["median"] > 0:
            return info["flops_per_call"] / entry["stats"]["median"] / 1e9, info["yardstick"]
    return None


def rows(data):
    """Table cells per benchmark, grouped by case, lstm_fast first."""
    peak = (yardstick(data) or (None,))[0]
    groups = defaultdict(dict)
    for entry in data["benchmarks"]:
        info = entry.get("extra_info", {})
        if "peer" not in info:  # not one of ours (or the yardstick)
            continue
        groups[info["case"]][info["peer"]] = (entry["stats"], info)
    order = {peer: i for i, peer in enumerate(lb.PEERS)}
    out = []
    for case_name, peers in groups.items():
        base = peers.get("lstm_fast")
        base_median = base[0]["median"] if base else None
        for peer in sorted(peers, key=lambda p: order.get(p, len(order))):
            stats, info = peers[peer]
            median = stats["median"]
            out.append(
                lb.table_row(
                    case_name,
                    peer,
                    info.get("streaming", False),
                    median,
                    stats["min"],
                    info["flops_per_call"] / median / 1e9 if median > 0 else None,
                    median / base_median if base_median else None,
                    ("ok" if info.get("checked") else "UNCHECKED")
                    + ("" if base else "; no lstm_fast result in this group"),
                    peak=peak,
                )
            )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="a file written by --benchmark-json")
    args = parser.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        data = json.load(f)
    table_rows = rows(data)
    if not table_rows:
        print(f"{args.json}: no lstm_fast benchmark results", file=sys.stderr)
        return 1
    machine = data.get("machine_info", {})
    print(
        f"{machine.get('cpu', {}).get('brand_raw', 'unknown CPU')}, "
        f"python {machine.get('python_version', '?')}, {data.get('datetime', '')}"
    )
    print("ratio = peer median / lstm_fast median (> 1: lstm_fast is faster)")
    measured = yardstick(data)
    if measured:
        print(f"%peak = GFLOP/s / {measured[0]:.1f} GFLOP/s of the yardstick ({measured[1]}, "
              f"median)")
    print()
    table = lb.Table({r[0] for r in table_rows}, {r[1] for r in table_rows},
                     peak_column=measured is not None)
    table.header()
    for r in table_rows:
        table.row(r)
    unchecked = [f"{r[0]} / {r[1]}" for r in table_rows if r[6].startswith("UNCHECKED")]
    if unchecked:
        print(f"\n{len(unchecked)} result(s) whose checks failed or did not run: "
              + ", ".join(unchecked), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
