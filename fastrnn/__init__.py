"""fastrnn: RNN, GRU and LSTM language models, fast on a CPU and checked against NumPy."""
from . import optim
from .backends import available_backends, backend_info, get_backend, set_num_threads
from .generate import generate_sentence, generate_text
from .io import (load_model, load_model_parameters_numpy, load_model_parameters_theano,
                 save_model, save_model_parameters_numpy, save_model_parameters_theano)
from .models import GRU, LSTM, RNN
from .seed_models import GRUTheano, RNNKeras
from .text import Vocabulary, load_corpus
from .train import Trainer, evaluate
from .tutorial import RNNNumpy, RNNTheano

__version__ = "0.1.0"

__all__ = [
    "RNNNumpy", "RNNTheano", "GRUTheano", "RNNKeras",
    "RNN", "GRU", "LSTM",
    "Trainer", "evaluate", "generate_sentence", "generate_text",
    "Vocabulary", "load_corpus",
    "load_model", "save_model",
    "load_model_parameters_numpy", "load_model_parameters_theano",
    "save_model_parameters_numpy", "save_model_parameters_theano",
    "optim",
    "available_backends", "backend_info", "get_backend", "set_num_threads",
    "__version__",
]
