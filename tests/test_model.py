"""sparklstm.nn.model: the peephole LSTM equations, nn.LSTM equivalence, gradients, the classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparklstm.nn.model import CELLS, POOLINGS, LSTMClassifier, PeepholeLSTM, RecurrentStack, reverse_rows


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: one intra-op thread avoids OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_peephole(input_size: int, hidden_size: int, *, seed: int, scale: float = 0.5):
    """A float64 PeepholeLSTM with every weight (peepholes included) random and non-zero."""
    gen = torch.Generator().manual_seed(seed)
    layer = PeepholeLSTM(input_size, hidden_size).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale)
    return layer


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _reference_peephole(x, w_ih, w_hh, b, w_peep):
    """The seed's equations step by step in numpy. x: (B, T, D) -> h_t for every t: (B, T, H)."""
    H = w_hh.shape[1]
    W_xi, W_xf, W_xc, W_xo = (w_ih[k * H:(k + 1) * H] for k in range(4))
    W_hi, W_hf, W_hc, W_ho = (w_hh[k * H:(k + 1) * H] for k in range(4))
    b_i, b_f, b_c, b_o = (b[k * H:(k + 1) * H] for k in range(4))
    W_ci, W_cf, W_co = w_peep
    B, T, _ = x.shape
    out = np.zeros((B, T, H))
    for n in range(B):
        h, c = np.zeros(H), np.zeros(H)  # h_0 = c_0 = 0
        for t in range(T):
            x_t = x[n, t]
            i_t = _sigmoid(W_xi @ x_t + W_hi @ h + W_ci * c + b_i)
            f_t = _sigmoid(W_xf @ x_t + W_hf @ h + W_cf * c + b_f)
            o_t = _sigmoid(W_xo @ x_t + W_ho @ h + W_co * c + b_o)  # c_{t-1}
            c = f_t * c + i_t * np.tanh(W_xc @ x_t + W_hc @ h + b_c)
            h = o_t * np.tanh(c)
            out[n, t] = h
    return out


def test_peephole_matches_the_equations_step_by_step():
    """PeepholeLSTM computes exactly the seed's peephole equations (float64, 1e-10)."""
    layer = _random_peephole(3, 4, seed=0)
    assert layer.weight_peep.abs().min() > 0
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = layer(x).numpy()
    want = _reference_peephole(
        x.numpy(), layer.weight_ih.detach().numpy(), layer.weight_hh.detach().numpy(),
        layer.bias.detach().numpy(), layer.weight_peep.detach().numpy(),
    )
    assert got.shape == (2, 5, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_peepholes_change_the_output():
    """Non-zero peephole weights matter: zeroing them changes h (the test above is not vacuous)."""
    layer = _random_peephole(3, 4, seed=0)
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with_peep = layer(x)
        layer.weight_peep.zero_()
        without = layer(x)
    assert (with_peep - without).abs().max() > 1e-3


def test_zero_peepholes_equal_nn_lstm():
    """With W_c* = 0 the layer equals nn.LSTM with the same stacked weights, at every step."""
    layer = _random_peephole(3, 4, seed=2)
    ref = nn.LSTM(3, 4, num_layers=1, batch_first=True).double()
    with torch.no_grad():
        layer.weight_peep.zero_()
        ref.weight_ih_l0.copy_(layer.weight_ih)
        ref.weight_hh_l0.copy_(layer.weight_hh)
        ref.bias_ih_l0.copy_(layer.bias)
        ref.bias_hh_l0.zero_()
        x = torch.randn(3, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        got = layer(x)
        want, _ = ref(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_peephole_gradcheck():
    """Autograd gradients w.r.t. input and every parameter match finite differences (float64)."""
    layer = _random_peephole(2, 3, seed=4)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(5))

    def fn(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- classifier

VOCAB = 50


def _classifier(cell: str, num_classes: int, *, seed: int = 0, dropout: float = 0.3,
                pooling: str = "last"):
    torch.manual_seed(seed)
    return LSTMClassifier(vocab_size=VOCAB, num_classes=num_classes, cell=cell, embed_dim=8,
                          hidden_size=12, num_layers=2, dropout=dropout, pooling=pooling)


def _batch(lengths, *, seed: int = 0):
    """Right-padded random ids (B, T) with 0 after each row's length, and the lengths (B,)."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(2, VOCAB, (n,), generator=gen)
    return ids, torch.tensor(lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_classifier_output_shape_and_probabilities(cell, num_classes):
    """Logits are (B, 1) for 2 classes, (B, C) otherwise; probabilities are (B, C) rows summing to 1."""
    model = _classifier(cell, num_classes).eval()
    ids, lengths = _batch([4, 9, 1, 6])
    with torch.no_grad():
        logits = model(ids, lengths)
        probs = model.probabilities(logits)
    assert logits.shape == (4, 1 if num_classes == 2 else num_classes)
    assert probs.shape == (4, num_classes)
    assert (probs >= 0).all() and (probs <= 1).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4), rtol=0, atol=1e-6)
    if num_classes == 2:  # sigmoid head: p(class 1) = sigmoid(logit)
        torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_classes", [2, 4])
def test_classifier_padding_invariance(cell, num_classes, pooling):
    """In eval mode a row's logits are the same alone and right-padded inside a longer batch."""
    model = _classifier(cell, num_classes, pooling=pooling).eval()
    ids, lengths = _batch([3, 11, 7, 16, 1], seed=1)
    with torch.no_grad():
        together = model(ids, lengths)
        for r, n in enumerate(lengths.tolist()):
            alone = model(ids[r:r + 1, :n], lengths[r:r + 1])
            torch.testing.assert_close(alone, together[r:r + 1], rtol=0, atol=1e-5)
        # Extra padding columns after the longest row change nothing either.
        wider = torch.cat([ids, torch.zeros(len(lengths), 5, dtype=torch.long)], dim=1)
        torch.testing.assert_close(model(wider, lengths), together, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_classifier_padding_tokens_are_never_read(cell, pooling):
    """Changing the ids after a row's length (padding positions) does not change its logits."""
    model = _classifier(cell, 3, pooling=pooling).eval()
    ids, lengths = _batch([4, 10], seed=2)
    garbage = ids.clone()
    garbage[0, 4:] = torch.arange(2, 8)  # real-looking tokens where padding was
    with torch.no_grad():
        torch.testing.assert_close(model(garbage, lengths), model(ids, lengths), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_classifier_loss_finite_and_decreases_with_adam(cell, num_classes):
    """The loss is finite and a few Adam steps on one toy batch lower it markedly."""
    model = _classifier(cell, num_classes, dropout=0.0).train()
    ids, lengths = _batch([5, 8, 3, 8, 6, 2, 7, 4], seed=3)
    targets = torch.arange(8) % num_classes
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.loss(model(ids, lengths), targets)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_binary_loss_is_bce_and_multiclass_loss_is_cross_entropy():
    """2 classes use BCE-with-logits on the single logit; more use softmax cross-entropy."""
    logits2 = torch.tensor([[0.3], [-1.2]])
    y = torch.tensor([1, 0])
    m2 = _classifier("lstm", 2)
    want2 = -(np.log(1 / (1 + np.exp(-0.3))) + np.log(1 - 1 / (1 + np.exp(1.2)))) / 2
    assert m2.loss(logits2, y).item() == pytest.approx(want2, rel=1e-6)
    logits3 = torch.tensor([[1.0, 2.0, 0.5]])
    m3 = _classifier("lstm", 3)
    z = np.array([1.0, 2.0, 0.5])
    want3 = -(z[2] - np.log(np.exp(z).sum()))
    assert m3.loss(logits3, torch.tensor([2])).item() == pytest.approx(want3, rel=1e-6)


def test_classifier_rejects_bad_arguments():
    """An unknown cell or fewer than 2 classes is refused."""
    with pytest.raises(ValueError, match="cell"):
        LSTMClassifier(vocab_size=10, num_classes=2, cell="transformer")
    with pytest.raises(ValueError, match="2 classes"):
        LSTMClassifier(vocab_size=10, num_classes=1)


@pytest.mark.parametrize("mode", ["locked", "element"])
def test_embedding_dropout_mask_is_locked_per_sequence(mode):
    """Training: the default (locked) drops the same embedding units at every step of a sequence
    (one (B, 1, E) mask); element drops each (b, t, e) independently. Eval: no dropout at all."""
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=VOCAB, num_classes=2, embed_dim=16, hidden_size=8, dropout=0.5,
                           dropout_style=mode)
    seen = []
    model.rnn.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    ids = torch.full((3, 12), 5)  # the same token at every step
    model.train()
    model(ids, torch.full((3,), 12))
    x = seen[-1]  # (B, T, E) as the LSTM receives it
    same_over_time = bool((x == x[:, :1]).all())
    assert same_over_time == (mode == "locked")
    assert 0 < (x == 0).float().mean() < 1  # some units dropped, not all
    model.eval()
    model(ids, torch.full((3,), 12))
    torch.testing.assert_close(seen[-1], model.embedding(ids))


def test_reverse_rows_reverses_real_steps_and_keeps_padding_after_them():
    x = torch.arange(1.0, 7.0).view(1, 6, 1).repeat(3, 1, 1)  # (3, 6, 1): 1..6 in every row
    out = reverse_rows(x, torch.tensor([4, 6, 1]))[..., 0]
    assert out.tolist() == [[4, 3, 2, 1, 0, 0], [6, 5, 4, 3, 2, 1], [1, 0, 0, 0, 0, 0]]


OPTIONS = [{"bidirectional": True}, {"bag_of_embeddings": True},
           {"bidirectional": True, "bag_of_embeddings": True}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o))
@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_and_bag_of_embeddings_never_read_padding(cell, options):
    """Both options keep the padding contract: a row alone, inside a wider batch, or with garbage
    where its padding was, gives the same logits."""
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=VOCAB, num_classes=3, cell=cell, embed_dim=8, hidden_size=12,
                           **options).eval()
    ids, lengths = _batch([3, 11, 1, 7], seed=4)
    with torch.no_grad():
        together = model(ids, lengths)
        for r, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(model(ids[r:r + 1, :n], lengths[r:r + 1]), together[r:r + 1],
                                       rtol=0, atol=1e-5)
        garbage = torch.cat([ids, torch.zeros(4, 3, dtype=torch.long)], dim=1)
        garbage[0, 3:] = 7
        torch.testing.assert_close(model(garbage, lengths), together, rtol=0, atol=1e-5)


def test_bidirectional_reverse_stack_reads_each_row_backwards():
    """The second stack's features are those of a forward stack run on the reversed tokens."""
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=VOCAB, num_classes=2, embed_dim=8, hidden_size=12,
                           bidirectional=True, bag_of_embeddings=False, pooling="last").eval()
    ids, lengths = _batch([5, 2], seed=5)
    seen = []
    model.rnn_reverse.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(ids, lengths)
        for r, n in enumerate(lengths.tolist()):
            backwards = model.embedding(ids[r, :n].flip(0))  # (n, E)
            torch.testing.assert_close(seen[0][r, :n], backwards)
            assert (seen[0][r, n:] == 0).all()
    assert set(model.rnn_reverse.state_dict()) == set(model.rnn.state_dict())
    assert not torch.equal(model.rnn_reverse.layers[0].weight_hh_l0, model.rnn.layers[0].weight_hh_l0)
    assert model.head.in_features == 2 * 12
    both = LSTMClassifier(vocab_size=VOCAB, num_classes=2, embed_dim=8, hidden_size=12,
                          bidirectional=True, bag_of_embeddings=True)
    assert both.head.in_features == 2 * 3 * 12 + 8  # concat pooling per direction + mean embedding


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stack_computes_what_a_multilayer_torch_rnn_computes_and_loads_its_weights(cell):
    """One module per layer, run time-major, is a 2-layer nn.LSTM/nn.GRU in eval mode; weights
    saved from the multi-layer module (models stored before the stack) load into it."""
    torch.manual_seed(0)
    ref = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](6, 5, num_layers=2, batch_first=True).eval()
    stack = RecurrentStack(cell, 6, 5, num_layers=2, dropout=0.3).eval()
    stack.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(stack(x), ref(x)[0], rtol=0, atol=1e-6)
    # Saved under the multi-layer module's names, so older versions read new models too.
    assert set(stack.state_dict()) == set(ref.state_dict())
    again = RecurrentStack(cell, 6, 5, num_layers=2, dropout=0.3).eval()
    again.load_state_dict(stack.state_dict(), strict=True)
    assert torch.equal(again.layers[1].weight_hh_l0, ref.weight_hh_l1)


def test_reverse_rows_never_reads_another_row():
    """A length beyond T (a caller's mistake) stays inside its own row."""
    x = torch.arange(1.0, 7.0).view(2, 3, 1)  # rows [1, 2, 3] and [4, 5, 6]
    out = reverse_rows(x, torch.tensor([5, 3]))[..., 0]
    assert out[0].tolist() == [3, 3, 3] and out[1].tolist() == [6, 5, 4]


def test_dropout_must_leave_something():
    with pytest.raises(ValueError, match="dropout"):
        LSTMClassifier(vocab_size=10, num_classes=2, dropout=1.0)


@pytest.mark.parametrize("style", ["locked", "element"])
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers_is_locked_per_sequence(cell, style):
    """Training: the second layer's input has the same units dropped at every step of a sequence
    (locked, the default) or each (t, b, h) on its own (element). Eval: no dropout."""
    torch.manual_seed(0)
    stack = RecurrentStack(cell, 4, 16, num_layers=2, dropout=0.5, dropout_style=style)
    seen = []
    second = stack.layers[1]
    if cell == "peephole":  # the stack calls its time-major entry point, which hooks don't see
        run = second.forward_time_major
        second.forward_time_major = lambda x: (seen.append(x.detach()), run(x))[1]
    else:
        second.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    x = torch.randn(3, 12, 4)
    stack.train()
    stack(x)
    dropped = seen[-1] == 0  # (T, B, H) time-major inside the stack
    assert 0 < dropped.float().mean() < 1
    assert bool((dropped == dropped[:1]).all()) == (style == "locked")
    stack.eval()
    stack(x)
    assert not (seen[-1] == 0).any()
