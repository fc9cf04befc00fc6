"""keeptune.train.dropout: LoRA dropout from 31-bit random integers."""
from __future__ import annotations

import math

import pytest
import torch

from keeptune.train.dropout import MaskDropout, use_fast_dropout


@pytest.mark.parametrize("p", [0.05, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drops_with_probability_p_and_scales_the_rest(p, dtype):
    torch.manual_seed(0)
    x = torch.rand(400, 1000, dtype=dtype) + 1  # no zeros: a zero in the output is a dropped element
    y = MaskDropout(p).train()(x)
    dropped = (y == 0).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / x.numel())  # binomial standard deviation of the dropped share
    assert abs(dropped - p) < 5 * sigma
    kept = y != 0
    expected = (x.float() * (1 / (1 - p))).to(dtype)  # nn.Dropout's scaling, rounded once to dtype
    torch.testing.assert_close(y[kept], expected[kept], rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0)


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(50, 64, requires_grad=True)
    y = MaskDropout(0.2).train()(x)
    y.backward(torch.ones_like(y))
    factor = torch.where(y != 0, 1 / 0.8, 0.0)
    torch.testing.assert_close(x.grad, factor)


def test_the_seed_decides_the_mask_and_eval_is_the_identity():
    x = torch.randn(30, 40)
    layer = MaskDropout(0.5).train()
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(layer(x), first)  # the generator moved on
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="not in"):
        MaskDropout(1.0)


def test_swaps_peft_dropout_and_leaves_the_adapter_alone(tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else None
    assert use_fast_dropout(model) == 2 * layers
    dropouts = [m for m in model.modules() if isinstance(m, MaskDropout)]
    assert len(dropouts) == 2 * layers and all(m.p == 0.05 for m in dropouts)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
