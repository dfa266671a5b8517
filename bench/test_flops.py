"""FLOP counting sanity: FlopCounterMode sees the backward inside torch.func.grad, as autograd's."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

import engine
from bench.roofline import count_flops
from losses import make_elbo_loss
from models import build_vae

B, IN, OUT = 32, 64, 16


def test_linear_step_counts_forward_and_backward():
    """Forward 2*B*in*out; backward the weight and input gradients, 2*B*in*out each: 6*B*in*out
    (4*B*in*out when the input needs no gradient, as the data fed to a first layer)."""
    layer, x = nn.Linear(IN, OUT), torch.randn(B, IN)
    params = {k: v.detach() for k, v in layer.named_parameters()}  # as in the engine's state

    def loss(params, h):
        return functional_call(layer, params, (h,)).square().sum()

    def hidden_loss(params, x):
        # the layer's input is an activation, not a leaf: FlopCounterMode's module hooks make
        # torch.func.grad raise ("A leaf node was passed to _will_engine_execute_node") on a leaf
        # input of a module call that torch.func.grad differentiates
        return loss(params, x * 1.0)

    assert count_flops(lambda: torch.func.grad(loss)(params, x)) == 4 * B * IN * OUT
    assert count_flops(lambda: torch.func.grad(hidden_loss, argnums=(0, 1))(params, x)) == 6 * B * IN * OUT
    x.requires_grad_()
    assert count_flops(lambda: layer(x).square().sum().backward()) == 6 * B * IN * OUT


def test_engine_step_count_equals_an_explicit_forward_backward_count():
    """The bench counts whole engine steps (torch.func.grad inside); an explicit autograd count of
    the same loss (forward, then torch.autograd.grad) must agree, backward included."""
    torch.manual_seed(0)
    model = build_vae("mlp", 20)
    loss_fn, opt = make_elbo_loss(model), engine.adam(1e-3)
    state = engine.init_state(model, opt)
    batch = {"x": torch.rand(B, 1, 28, 28), "eps": torch.randn(B, 20)}
    step = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=False))
    counted = count_flops(lambda: step(state, batch))

    params = {k: v.clone().requires_grad_() for k, v in state.params.items()}

    def forward_backward():
        loss, _ = loss_fn(params, state.buffers, {**batch, "step": state.step})
        torch.autograd.grad(loss, list(params.values()))

    forward = count_flops(lambda: loss_fn(state.params, state.buffers, {**batch, "step": state.step}))
    assert counted == count_flops(forward_backward)
    assert counted > 2 * forward  # the backward is there (about 2x the forward; fc1 has no input grad)


def test_matmul_counts_2n3():
    a = torch.randn(48, 48)
    assert count_flops(lambda: a @ a) == 2 * 48**3
