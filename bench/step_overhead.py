"""Per-call cost of one time step of a tiny LSTM (H=8), where arithmetic is
negligible and the call itself is what is measured: the ways lstm_fast takes
one step, next to a Python call that does nothing (this interpreter's own
floor) and, when installed, torch's and ONNX Runtime's one-step calls.

    python bench/step_overhead.py [--hidden 8] [--repeat 9] [--number 20000]

Prints the median over `repeat` samples of `number` calls each, in
microseconds per call, on one thread.
"""
import argparse
import statistics
import time

import numpy as np

import lstm_fast


def _time_per_call(fn, number, repeat):
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples) * 1e6


def _candidates(H):
    lstm_fast.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((1, H), dtype=np.float32)
    h = np.zeros((1, H), np.float32)
    c = np.zeros((1, H), np.float32)
    cell = lstm_fast.LSTMCell(H, H, seed=0)
    layer = lstm_fast.LSTM(H, H, seed=0)
    stream = layer.stream(batch_size=1)
    out = np.empty((1, H), np.float32)
    x3, h3, c3 = x[None], h[None], c[None]
    yield "python call doing nothing", lambda: None
    yield "lstm_fast stream.step(x, out=y)", lambda: stream.step(x, out=out)
    yield "lstm_fast stream.step(x)", lambda: stream.step(x)
    yield "lstm_fast LSTMCell(x, (h, c))", lambda: cell(x, (h, c))
    yield "lstm_fast LSTM(x[None], (h, c))", lambda: layer(x3, (h3, c3))
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(1)
        tcell = cell.to_torch()
        tx, th, tc = (torch.from_numpy(a) for a in (x, h, c))

        def torch_step():
            with torch.inference_mode():
                return tcell(tx, (th, tc))

        yield "torch LSTMCell(x, (h, c))", torch_step
    try:
        import onnxruntime
    except ImportError:
        pass
    else:
        from lstm_fast import bench as lb

        # The bench's streaming peer: one step per run, the state fed back.
        case = lb.Case("overhead", "lstm", 100, 1, H, H, streaming=True)
        runner = lb.build_peer("onnxruntime", case, lb.make_problem(case), 1)
        yield "onnxruntime LSTM node, one step", runner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args(argv)
    print(f"LSTM one step, B=1, I=H={args.hidden}, 1 thread; median of {args.repeat} x "
          f"{args.number} calls")
    for name, fn in _candidates(args.hidden):
        print(f"  {name:<36} {_time_per_call(fn, args.number, args.repeat):8.2f} us")


if __name__ == "__main__":
    main()
