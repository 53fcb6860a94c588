"""ECG networks: SSSD eps-net with S4D layers, and the CNN classifiers / guidance net. Tiny sizes (CPU)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tgdp import losses
from tgdp.config import ScoreConfig
from tgdp.models import CLASSIFIER_NETS, GUIDANCE_NETS, SCORE_NETS, TIME_CLASSIFIER_NETS, build
from tgdp.models.ecg_nets import ClassifierCNN, GuidanceCNN, TimeClassifierCNN
from tgdp.models.sssd import SSSD, S4DKernel, S4DLayer, diffusion_time_embedding, fft_conv
from tgdp.reporter import MemoryReporter
from tgdp.schedules import VPSchedule
from tgdp.stages import train_score

SMALL = dict(width=8, depth=2)


def _batch(n: int = 3, leads: int = 8, length: int = 37, labels: int = 0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, leads, length, generator=g)
    t = torch.rand(n, generator=g) * 0.99 + 0.01
    y = (torch.rand(n, labels, generator=g) > 0.5).float() if labels else None
    return x, t, y


# --- S4D kernel ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_kernel_is_impulse_response_of_the_diagonal_recurrence(init):
    # Guards the Vandermonde formula: K[l] must equal 2 Re(C_bar A_bar^l B_bar) of the ZOH recurrence
    # x_l = A_bar x_{l-1} + u_l (B folded into C_bar), driven by a unit impulse.
    torch.manual_seed(0)
    kernel = S4DKernel(3, state_size=8, channels=2, init=init)
    L = 12
    K = kernel(L).detach()
    dtA, C = kernel.discrete()
    state = torch.zeros_like(dtA)
    for l in range(L):
        state = torch.exp(dtA) * state + (1.0 if l == 0 else 0.0)
        for c in range(2):
            expected = 2.0 * (C[c] * state).sum(-1).real.detach()
            torch.testing.assert_close(K[c, :, l], expected, atol=1e-5, rtol=1e-4)


def test_fft_conv_equals_direct_bidirectional_convolution():
    # Guards the padding/flip layout: causal part y[i] += k0[i-j] u[j] (j <= i), anti-causal part
    # y[i] += k1[j-i-1] u[j] (j > i), and no circular wrap-around. Odd L on purpose.
    torch.manual_seed(1)
    H, L = 3, 11
    k = torch.randn(2, H, L)
    u = torch.randn(2, H, L)
    direct = torch.zeros_like(u)
    for i in range(L):
        for j in range(L):
            direct[..., i] += (k[0, :, i - j] if j <= i else k[1, :, j - i - 1]) * u[..., j]
    torch.testing.assert_close(fft_conv(u, k), direct, atol=1e-5, rtol=1e-4)
    causal = torch.zeros_like(u)
    for i in range(L):
        for j in range(i + 1):
            causal[..., i] += k[0, :, i - j] * u[..., j]
    torch.testing.assert_close(fft_conv(u, k[0]), causal, atol=1e-5, rtol=1e-4)


def test_s4d_layer_uses_its_kernel():
    # The layer's pre-activation is exactly the kernel convolution plus the D skip.
    torch.manual_seed(2)
    layer = S4DLayer(4, state_size=8)
    u = torch.randn(2, 4, 9)
    k = layer.kernel(9)
    pre = fft_conv(u, k) + u * layer.D[:, None]
    expected = torch.nn.functional.glu(layer.out(torch.nn.functional.gelu(pre)), dim=1)
    torch.testing.assert_close(layer(u), expected)


def test_s4d_rejects_bad_config():
    with pytest.raises(ValueError, match="even"):
        S4DKernel(2, state_size=7)
    with pytest.raises(ValueError, match="init"):
        S4DKernel(2, init="legs")


# --- SSSD ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [16, 37])
@pytest.mark.parametrize("labels", [0, 5])
def test_sssd_shapes(length, labels):
    # eps has the input's shape for any L (odd included) and with/without label conditioning.
    x, t, y = _batch(length=length, labels=labels)
    net = SSSD((8, 1000), num_labels=labels, state_size=8, **SMALL)
    assert net(x, t, y).shape == x.shape


def test_sssd_label_conditional_needs_labels_and_uses_them():
    x, t, y = _batch(labels=4)
    net = SSSD((8, 64), num_labels=4, state_size=8, zero_init=False, **SMALL)
    with pytest.raises(ValueError, match="label-conditional"):
        net(x, t)
    # Different labels must change the prediction (the label path is wired in).
    assert not torch.allclose(net(x, t, y), net(x, t, 1.0 - y))


def test_sssd_zero_init_predicts_zero_and_gradients_reach_every_parameter():
    x, t, _ = _batch()
    assert torch.count_nonzero(SSSD((8, 37), state_size=8, **SMALL)(x, t)) == 0  # DiffWave ZeroConv output
    net = SSSD((8, 37), state_size=8, zero_init=False, **SMALL)
    net(x, t).square().sum().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not no_grad, f"no gradient for {no_grad}"


def test_time_embedding_distinguishes_t():
    # Nearby diffusion times must get clearly different embeddings, and the net must react to t.
    t = torch.tensor([0.001, 0.01, 0.5, 0.51, 1.0])
    emb = diffusion_time_embedding(t)
    assert emb.shape == (5, 128)
    dist = torch.cdist(emb, emb)
    assert dist[~torch.eye(5, dtype=torch.bool)].min() > 0.1
    x, _, _ = _batch(n=2)
    net = SSSD((8, 37), state_size=8, zero_init=False, **SMALL)
    assert not torch.allclose(net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([0.9, 0.9])))


# --- CNN classifiers and guidance --------------------------------------------------------------------------

@pytest.mark.parametrize("length", [20, 33])
@pytest.mark.parametrize("labels", [0, 3])
def test_cnn_shapes(length, labels):
    x, t, y = _batch(length=length, labels=labels)
    assert ClassifierCNN((8, length), num_labels=labels, **SMALL)(x, y).shape == (3,)
    assert TimeClassifierCNN((8, length), num_labels=labels, **SMALL)(x, t, y).shape == (3,)
    assert GuidanceCNN((8, length), num_labels=labels, **SMALL)(x, t, y).shape == (3,)


def test_cnn_label_and_time_dependence():
    x, t, y = _batch(labels=3)
    clf = ClassifierCNN((8, 37), num_labels=3, **SMALL)
    assert not torch.allclose(clf(x, y), clf(x, 1.0 - y))  # joint ratio: the labels matter
    tcl = TimeClassifierCNN((8, 37), **SMALL)
    assert not torch.allclose(tcl(x, torch.full((3,), 0.05)), tcl(x, torch.full((3,), 0.95)))
    with pytest.raises(ValueError, match="label-conditional"):
        clf(x)


def test_guidance_cnn_starts_at_h_equal_one_and_supports_double_backward():
    x, t, _ = _batch()
    assert torch.count_nonzero(GuidanceCNN((8, 37), **SMALL)(x, t)) == 0  # log h = 0: no guidance at init
    # The consistency loss differentiates grad_x log h w.r.t. psi (create_graph=True): every conv and
    # head parameter must receive a gradient through that second-order path.
    net = GuidanceCNN((8, 37), zero_init=False, **SMALL)
    grad = losses.grad_log_h(lambda z: net(z, t), x, create_graph=True)
    assert grad.shape == x.shape
    grad.square().sum().backward()
    no_grad = [p for p in net.parameters() if p.grad is None or not torch.any(p.grad != 0)]
    # The head's final bias shifts log h by a constant, so it has no x-gradient; everything else must.
    assert len(no_grad) == 1 and no_grad[0] is net.head[-1].bias


def test_classifier_gradients_flow():
    x, _, y = _batch(labels=2)
    net = ClassifierCNN((8, 37), num_labels=2, **SMALL)
    net(x, y).sum().backward()
    assert all(p.grad is not None and torch.any(p.grad != 0) for p in net.parameters())


# --- registries and the score stage --------------------------------------------------------------------------

def test_registry_construction():
    x, t, y = _batch(length=24, labels=2)
    score = build(SCORE_NETS, "sssd", (8, 24), 8, 1, num_labels=2)
    assert isinstance(score, SSSD) and score(x, t, y).shape == x.shape
    assert build(CLASSIFIER_NETS, "cnn", (8, 24), 8, 2, 2)(x, y).shape == (3,)
    assert build(TIME_CLASSIFIER_NETS, "cnn", (8, 24), 8, 2, 2)(x, t, y).shape == (3,)
    assert build(GUIDANCE_NETS, "cnn", (8, 24), 8, 2, 2)(x, t, y).shape == (3,)


@pytest.mark.parametrize("conditional", [False, True])
def test_train_score_runs_with_sssd(conditional):
    # The stage trains the registry's "sssd" net on (N, 8, L) records end to end.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 8, 64, generator=g)
    y = (torch.rand(8, 3, generator=g) > 0.5).float() if conditional else None
    cfg = ScoreConfig(arch="sssd", width=8, depth=1, steps=3, report_every=1, batch_size=4, ema=0.9,
                      conditional=conditional)
    reporter = MemoryReporter()
    model = train_score(cfg, x, y, VPSchedule(), torch.device("cpu"), reporter, stage="source")
    losses_seen = reporter.history("source", "dsm_loss")
    assert len(losses_seen) == 3 and all(torch.isfinite(torch.tensor(losses_seen)))
    assert isinstance(model, SSSD) and not model.training
    out = model(x[:2], torch.full((2,), 0.5), y[:2] if conditional else None)
    assert out.shape == (2, 8, 64)


def test_bf16_precision_runs_the_sssd_under_autocast_and_keeps_the_ffts_in_float32(monkeypatch):
    # precision="bf16": the same weights give float32 eps within bf16 rounding of the fp32 net, the convolutions
    # really run in bf16 (else the error would be ~1e-7), and the FFT convolution sees float32 inputs.
    from tgdp import stages
    from tgdp.models import sssd as sssd_module

    x, t, y = _batch(length=64, labels=3)
    cfg = ScoreConfig(arch="sssd", width=16, depth=2, conditional=True)
    torch.manual_seed(0)
    fp32 = stages.build_score(cfg, (8, 64), 3)
    bf16 = stages.build_score(replace(cfg, precision="bf16"), (8, 64), 3)
    for p in fp32.parameters():
        torch.nn.init.normal_(p, std=0.2)
    bf16.net.load_state_dict(fp32.state_dict())
    conv_in, rfft_in = [], []
    inner_conv, inner_rfft = sssd_module.fft_conv, torch.fft.rfft
    monkeypatch.setattr(sssd_module, "fft_conv", lambda u, k: conv_in.append(u.dtype) or inner_conv(u, k))
    monkeypatch.setattr(torch.fft, "rfft", lambda v, **kw: rfft_in.append(v.dtype) or inner_rfft(v, **kw))
    ref, out = fp32(x, t, y), bf16(x, t, y)
    assert out.dtype == torch.float32 and conv_in[-1] == torch.bfloat16  # bf16 reaches the S4D layer,
    assert set(rfft_in) == {torch.float32}  # but cuFFT has no bf16: the transforms run in float32
    err = ((out - ref).norm() / ref.norm()).item()
    assert 1e-4 < err < 5e-2, err
    out.square().mean().backward()  # ...and the training graph goes through the casts
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bf16.parameters())
    with pytest.raises(ValueError, match="precision"):
        ScoreConfig(precision="fp16")
