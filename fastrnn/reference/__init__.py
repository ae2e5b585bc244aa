"""The NumPy reference: readable, loop-level, the oracle every other backend is tested against.

Nothing here is tuned for speed.  Each function follows the equations one time step at a
time, so that a reader can check it against the maths and a test can check every fast
path against it.  The reference itself is checked by finite differences in float64.
"""
from .rnn import rnn_forward, rnn_grad, rnn_loss, rnn_sgd  # noqa: F401
from .elman import rnn_layer_backward, rnn_layer_forward, rnn_log_softmax, rnn_softmax_xent  # noqa: F401
from .gru import (gru_layer_backward, gru_layer_forward, gru_rmsprop,  # noqa: F401
                  gru_rmsprop_columns)
from .lstm import lstm_layer_backward, lstm_layer_forward  # noqa: F401
