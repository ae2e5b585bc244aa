"""fastrnn's RNN/GRU/LSTM against torch.nn.Embedding + RNN/GRU/LSTM + Linear, float64.

On the same weights the log-probabilities, the mean NLL, every gradient, and the final
state agree to ~1e-10 relative; padded batches are compared with ``pack_padded_sequence``
(torch's way of holding the state after a sequence ends).  Skipped without torch.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn.models import GRU, LSTM, RNN

torch = pytest.importorskip("torch")
F = torch.nn.functional

CELLS = {"rnn": (RNN, torch.nn.RNN), "gru": (GRU, torch.nn.GRU), "lstm": (LSTM, torch.nn.LSTM)}


class TorchLM(torch.nn.Module):
    """The module whose state_dict layout :meth:`to_torch_state_dict` produces."""

    def __init__(self, rnn_cls, V, E, H, L, bias=True):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, E)
        self.rnn = rnn_cls(E, H, L, bias=bias)
        self.decoder = torch.nn.Linear(H, V)

    def forward(self, x, hidden=None, lengths=None):
        e = self.embedding(x)
        if lengths is not None:
            e = torch.nn.utils.rnn.pack_padded_sequence(e, lengths, enforce_sorted=False)
        out, hidden = self.rnn(e, hidden)
        if lengths is not None:
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
        return F.log_softmax(self.decoder(out), dim=-1), hidden


def backends():
    out = ["numpy"]
    if fastrnn.available_backends()["numba"] is True:
        out.append("numba")
    return out


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def pair(cell, bias=True, L=2, V=11, E=4, H=5, backend="numpy", seed=0):
    ours = CELLS[cell][0](V, H, num_layers=L, embedding_dim=E, bias=bias, dtype=np.float64,
                          backend=backend, seed=seed)
    for a in ours.parameters().values():
        a *= 3.0          # beyond the tiny default init: exercise the non-linear range
    tm = TorchLM(CELLS[cell][1], V, E, H, L, bias).double()
    tm.load_state_dict(ours.to_torch_state_dict(), strict=True)
    return ours, tm


def torch_grads(tm):
    g = {}
    for k, p in tm.named_parameters():
        key = k[len("rnn."):] if k.startswith("rnn.") else k
        g[key] = p.grad.detach().numpy()
    return g


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("cell", list(CELLS))
def test_outputs_loss_grads_hidden(cell, backend, bias):
    ours, tm = pair(cell, bias=bias, backend=backend)
    rng = np.random.default_rng(1)
    T, B = 6, 3
    x = rng.integers(0, 11, (T, B))
    y = rng.integers(0, 11, (T, B))
    shape = (2, B, 5)
    h0 = rng.uniform(-0.5, 0.5, shape)
    c0 = rng.uniform(-0.5, 0.5, shape)
    hidden = (h0, c0) if cell == "lstm" else h0
    th = (torch.tensor(h0), torch.tensor(c0)) if cell == "lstm" else torch.tensor(h0)

    logp, hT = ours.forward(x, hidden=hidden)
    tlogp, thT = tm(torch.tensor(x), th)
    assert rel(logp, tlogp.detach().numpy()) < 1e-10
    if cell == "lstm":
        assert rel(hT[0], thT[0].detach().numpy()) < 1e-10
        assert rel(hT[1], thT[1].detach().numpy()) < 1e-10
    else:
        assert rel(hT, thT.detach().numpy()) < 1e-10

    L, g, _ = ours.loss_and_grad(x, y, hidden=hidden)
    tloss = F.nll_loss(tlogp.reshape(T * B, -1), torch.tensor(y).reshape(-1))
    tloss.backward()
    assert L == pytest.approx(tloss.item(), rel=1e-12)
    tg = torch_grads(tm)
    assert set(tg) == set(g)
    for k in g:
        assert rel(g[k], tg[k]) < 1e-10, k


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("cell", list(CELLS))
def test_padded_batch_matches_packed_sequence(cell, backend):
    ours, tm = pair(cell, backend=backend, seed=2)
    rng = np.random.default_rng(3)
    lengths = [5, 2, 4, 1]
    T, B = max(lengths), len(lengths)
    x = rng.integers(0, 11, (T, B))
    y = rng.integers(0, 11, (T, B))
    mask = (np.arange(T)[:, None] < np.array(lengths)[None, :]).astype(float)
    L, g, hT = ours.loss_and_grad(x, y, mask)
    tlogp, thT = tm(torch.tensor(x), lengths=torch.tensor(lengths))
    nll = F.nll_loss(tlogp.reshape(T * B, -1), torch.tensor(y).reshape(-1), reduction="none")
    tloss = (nll * torch.tensor(mask).reshape(-1)).sum() / mask.sum()
    tloss.backward()
    assert L == pytest.approx(tloss.item(), rel=1e-12)
    tg = torch_grads(tm)
    for k in g:
        assert rel(g[k], tg[k]) < 1e-10, k
    if cell == "lstm":
        assert rel(hT[0], thT[0].detach().numpy()) < 1e-10
        assert rel(hT[1], thT[1].detach().numpy()) < 1e-10
    else:
        assert rel(hT, thT.detach().numpy()) < 1e-10


@pytest.mark.parametrize("cell", list(CELLS))
def test_state_dict_round_trip(cell):
    torch.manual_seed(0)
    tm = TorchLM(CELLS[cell][1], 9, 3, 4, 2).double()
    sd = tm.state_dict()
    ours = CELLS[cell][0].from_torch_state_dict(sd)
    assert (ours.vocab_size, ours.embedding_dim, ours.hidden_size, ours.num_layers) == (9, 3, 4, 2)
    assert ours.dtype == np.float64
    back = ours.to_torch_state_dict()
    assert list(back) == list(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    x = np.random.default_rng(4).integers(0, 9, (5, 2))
    tlogp, _ = tm(torch.tensor(x))
    assert rel(ours.forward(x)[0], tlogp.detach().numpy()) < 1e-10
    # float32 torch module -> float32 model
    ours32 = CELLS[cell][0].from_torch_state_dict(tm.float().state_dict())
    assert ours32.dtype == np.float32


def test_non_torch_variants_refuse_export():
    with pytest.raises(ValueError, match="reset_after=True and hard_gates=False"):
        GRU(5, 3, reset_after=False).to_torch_state_dict()
    with pytest.raises(ValueError, match="hard_gates=True"):
        LSTM(5, 3, hard_gates=True).to_torch_state_dict()
