"""lstm_fast: fast CPU LSTM, GRU and RNN layers with torch.nn's interface, on NumPy arrays.

The layers run a C core with kernels for several instruction sets, picked at
run time (LSTM_FAST_ISA=auto|portable|avx2|avx512 forces one; see
show_config()) and split each step's hidden units over threads
(set_num_threads, LSTM_FAST_NUM_THREADS). Importing this package never
imports torch, onnx or keras: lstm_fast.onnx runs ONNX's LSTM/GRU/RNN
operators without the onnx package, LSTM/GRU/RNN.from_keras read Keras
weights duck-typed, and lstm_fast.torch (which imports torch, so only on
`import lstm_fast.torch`) swaps the recurrent modules of a torch model.
"""
from ._config import cpu_info, get_num_threads, set_num_threads, show_config
from ._core import version as _core_version
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, Stream
from . import onnx  # noqa: E402  (needs no onnx package)

__version__ = _core_version()

__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "Stream",
    "cpu_info",
    "show_config",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]
