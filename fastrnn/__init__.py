"""fastrnn: RNN, GRU and LSTM language models, fast on a CPU and checked against NumPy."""
from .backends import available_backends, backend_info, get_backend
from .tutorial import RNNNumpy, RNNTheano

__version__ = "0.1.0"

__all__ = ["RNNNumpy", "RNNTheano", "available_backends", "backend_info", "get_backend",
           "__version__"]
