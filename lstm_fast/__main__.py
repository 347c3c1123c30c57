"""Command line of lstm_fast (`python -m lstm_fast ...`, or the `lstm-fast` script).

  info    the build and the CPU: compiled and usable ISAs, the one in use
  bench   lstm_fast against its peers (NumPy, and torch / ONNX Runtime when
          installed) on the same weights and data; see lstm_fast.bench

Needs nothing but numpy and lstm_fast: peers that are not installed are
listed as skipped.
"""
import argparse
import math
import os
import sys


def _names(values):
    """Accept both `--cases a b` and `--cases a,b`."""
    return [n for v in values or () for n in v.split(",") if n]


def _parser():
    from lstm_fast._config import default_threads
    from lstm_fast.bench import PEERS

    # `python -m lstm_fast` shows argv[0] as __main__.py; the script shows its own name.
    script = os.path.basename(sys.argv[0])
    prog = "python -m lstm_fast" if script in ("__main__.py", "") else script
    parser = argparse.ArgumentParser(prog=prog, description="lstm_fast: configuration and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{info,bench}")
    sub.add_parser("info", help="print the build and CPU configuration")
    b = sub.add_parser(
        "bench",
        help="time lstm_fast against its peers",
        description=(
            "Check, then time, lstm_fast and every installed peer on each case. "
            "ratio = peer median / lstm_fast median: above 1, lstm_fast is faster. "
            "Exits with status 1 if any peer's output disagrees with lstm_fast's "
            "or lstm_fast's disagrees with a float64 reference."
        ),
    )
    b.add_argument("--quick", action="store_true", help="small shapes, a few seconds in all")
    b.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        metavar="N",
        help="threads of lstm_fast, torch, onnxruntime and NumPy's OpenBLAS (default: the CPUs available, %(default)s)",
    )
    b.add_argument(
        "--repeat", type=int, default=20, metavar="N", help="timed samples per peer (default %(default)s)"
    )
    b.add_argument(
        "--max-time",
        type=float,
        default=3.0,
        metavar="S",
        help="stop sampling a case after S seconds per peer once every peer has 5 samples (default %(default)s)",
    )
    b.add_argument("--cases", nargs="+", metavar="PATTERN", help="case names or shell patterns (lstm_*)")
    b.add_argument(
        "--peers",
        nargs="+",
        metavar="PEER",
        help=f"peers to run besides lstm_fast, among {', '.join(PEERS[1:])} (default: every installed one)",
    )
    b.add_argument("--list", action="store_true", help="list the cases and peers, then exit")
    b.add_argument("--json", metavar="PATH", help="also write every result to PATH as JSON")
    b.set_defaults(error=b.error)
    return parser


def _bench(args):
    from lstm_fast import _core, bench
    from lstm_fast._config import resolve_isa

    if not 1 <= args.threads <= _core.MAX_THREADS:
        args.error(f"--threads must be in [1, {_core.MAX_THREADS}], got {args.threads}")
    try:
        resolve_isa()  # LSTM_FAST_ISA: refused now, not after the first peer's timing
    except ValueError as exc:
        args.error(str(exc))
    if args.repeat < 1:
        args.error(f"--repeat must be >= 1, got {args.repeat}")
    if not (math.isfinite(args.max_time) and args.max_time > 0):
        args.error(f"--max-time must be a finite number > 0, got {args.max_time}")
    if args.json:
        # Find out now, not after minutes of timing, that the results cannot be saved.
        target = os.path.abspath(args.json)
        folder = os.path.dirname(target)
        if os.path.isdir(target):
            args.error(f"--json {args.json}: is a directory")
        if not os.path.isdir(folder):
            args.error(f"--json {args.json}: no directory {folder}")
        if not os.access(target if os.path.exists(target) else folder, os.W_OK):
            args.error(f"--json {args.json}: not writable")
    try:
        cases = bench.select_cases(_names(args.cases), args.quick)
    except ValueError as exc:
        args.error(str(exc))
    named = _names(args.peers)
    wanted = named or list(bench.PEERS)
    unknown = [p for p in wanted if p not in bench.PEERS]
    if unknown:
        args.error(f"unknown peer(s) {', '.join(unknown)}; peers: {', '.join(bench.PEERS)}")

    if args.list:
        for case in cases:
            kind = "streaming, one step per call" if case.streaming else f"T={case.T}"
            print(f"{case.name:28s} {case.cell:8s} {kind}, B={case.B}, I={case.I}, H={case.H}")
        print("peers:", ", ".join(
            peer if reason is None else f"{peer} (cannot run here: {reason})"
            for peer, reason in ((p, None if p == "lstm_fast" else bench.peer_unavailable(p))
                                 for p in bench.PEERS)))
        return 0

    peers = ["lstm_fast"]
    skipped = []
    for peer in wanted:
        if peer == "lstm_fast":
            continue
        reason = bench.peer_unavailable(peer)
        if reason is None:
            peers.append(peer)
        elif named:
            # Asked for by name: running without it would answer another question.
            args.error(f"peer {peer} cannot run here: {reason}")
        else:
            skipped.append(f"{peer} ({reason})")

    blas_threads = bench.set_threads(args.threads)
    env = bench.environment(args.threads)
    info = env["cpu_info"]
    versions = [f"lstm_fast {env['lstm_fast']} (ISA {info.get('isa_active')})", f"numpy {env['numpy']}"]
    versions += [f"{m} {env[m]}" for m in ("torch", "onnxruntime") if m in env]
    print(" | ".join(versions))
    print(f"{info.get('cpu', 'unknown CPU')}, {env['cpu_count']} CPUs; python {env['python']} on {env['platform']}")
    threaded = ", ".join(p for p in peers if p != "numpy")
    if blas_threads is not None:
        print(f"threads: {threaded} {args.threads}; numpy's OpenBLAS {blas_threads}")
    else:
        print(
            f"threads: {threaded} {args.threads}; numpy's BLAS keeps its "
            "own default (none this process can set; set OPENBLAS_NUM_THREADS, or "
            "MKL_NUM_THREADS for MKL, before starting Python)"
        )
    if skipped:
        print("skipped peers: " + "; ".join(skipped))
    env["skipped_peers"] = skipped
    if not any(p in peers for p in ("torch", "onnxruntime")):
        print("note: no torch or onnxruntime peer, so lstm_fast is checked only against "
              "lstm_fast.numpy_impl (float64), which the numpy peer also runs")
    yardstick = bench.matmul_yardstick(args.threads)
    env["matmul_measured_with"] = yardstick[2]
    torch = sys.modules.get("torch")  # None too when an import of it was blocked
    if torch is not None:  # the yardstick's own library, even when torch is no peer
        env.setdefault("torch", getattr(torch, "__version__", None))
    print("ratio = peer median / lstm_fast median (> 1: lstm_fast is faster); "
          "GFLOP/s counts 2*T*B*G*H*(I+H); streaming rows are per step")
    print(f"%peak = GFLOP/s / float32 matmul GFLOP/s ({yardstick[2]}), the matmul timed in "
          "each case's rounds (medians)")
    print()

    table = bench.Table([c.name for c in cases], peers)
    table.header()
    failures = []

    def report(result):
        table.row(bench.result_row(result))
        where = f"{result.case.name} / {result.peer}"
        if result.error is not None:
            message = f"ERROR {where}: {result.error}"
        elif not result.ok:
            against = "a float64 reference" if result.peer == "lstm_fast" else "lstm_fast"
            message = f"MISMATCH {where} vs {against}: max |diff| = {result.max_abs_diff:.3g}"
        else:
            return
        # Also on stderr, so a wrong answer is not lost in a long table.
        print(message, file=sys.stderr, flush=True)
        failures.append(message)

    results = []
    for case in cases:
        results += bench.run_case(
            case, peers, args.threads, repeat=args.repeat, max_time=args.max_time, report=report,
            yardstick=yardstick,
        )

    if args.json:
        bench.write_json(args.json, results, env)
        print(f"\nwrote {args.json}")
    if failures:
        print(f"\n{len(failures)} FAILED CHECK(S):", file=sys.stderr)
        for message in failures:
            print("  " + message, file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        import lstm_fast

        lstm_fast.show_config()
        return 0
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
