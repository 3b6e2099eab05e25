"""TipsModel behaviour: outputs and shapes, attention implementations, bf16, gradient checkpointing, errors."""

import math

import pytest
import torch
from conftest import tiny_config

from tips_hf import TipsModel, TipsTextModel, TipsVisionModel


def _inputs(batch=3, height=56, width=84, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, height, width, generator=g)
    ids = torch.randint(2, 100, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[1, 11:] = 0
    ids = ids * mask
    return pixels, ids, mask


@pytest.fixture(scope="module", params=["mlp", "swiglu"])
def model(request):
    torch.manual_seed(0)
    return TipsModel(tiny_config(request.param)).eval()


def test_output_layout(model):
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    vision = out.vision_model_output
    assert vision.last_hidden_state.shape == (3, 2 + 4 * 6, 32)
    torch.testing.assert_close(vision.alt_text_embeds, vision.last_hidden_state[:, 0])
    torch.testing.assert_close(vision.synthetic_embeds, vision.last_hidden_state[:, 1])
    torch.testing.assert_close(vision.patch_embeds.reshape(3, 24, 32), vision.last_hidden_state[:, 2:])
    assert out.logits_per_image.shape == out.synthetic_logits_per_image.shape == (3, 3)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.t())
    cos = out.image_embeds @ out.text_embeds.t()
    torch.testing.assert_close(out.logits_per_image, cos / model.temperature[0])
    cos2 = out.synthetic_image_embeds @ out.text_embeds.t()
    torch.testing.assert_close(out.synthetic_logits_per_image, cos2 / model.temperature[1])
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(3))


def test_text_pooling_is_masked_mean(model):
    _, ids, mask = _inputs()
    with torch.no_grad():
        out = model.text_model(input_ids=ids, attention_mask=mask)
    hidden = out.last_hidden_state
    want = torch.stack([hidden[i, : int(mask[i].sum())].mean(0) for i in range(3)])
    torch.testing.assert_close(out.pooler_output, want, atol=1e-6, rtol=1e-5)
    # padding tokens cannot influence real tokens: change them, outputs stay
    changed = ids.clone()
    changed[0, 5:] = 7
    with torch.no_grad():
        again = model.text_model(input_ids=changed, attention_mask=mask)
    torch.testing.assert_close(again.pooler_output, out.pooler_output)


def test_attention_mask_defaults_to_nonzero_ids(model):
    _, ids, mask = _inputs()
    with torch.no_grad():
        a = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        b = model.text_model(input_ids=ids).pooler_output
    torch.testing.assert_close(a, b)


def test_empty_text_has_no_nan(model):
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[1, :3] = torch.tensor([5, 6, 7])
    with torch.no_grad():
        out = model.text_model(input_ids=ids, attention_mask=(ids != 0).long())
    assert torch.isfinite(out.pooler_output).all()
    assert out.pooler_output[0].abs().max() == 0


@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
def test_eager_equals_sdpa(ffn):
    torch.manual_seed(1)
    eager = TipsModel(tiny_config(ffn)).eval()
    eager.set_attn_implementation("eager")
    sdpa = TipsModel(tiny_config(ffn)).eval()
    sdpa.load_state_dict(eager.state_dict())
    sdpa.set_attn_implementation("sdpa")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        a = eager(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        b = sdpa(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    torch.testing.assert_close(
        a.vision_model_output.last_hidden_state, b.vision_model_output.last_hidden_state, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(a.text_embeds, b.text_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        a.text_model_output.last_hidden_state[1, :11], b.text_model_output.last_hidden_state[1, :11], atol=1e-5, rtol=0
    )


def test_eager_returns_attentions(model):
    model.set_attn_implementation("eager")
    try:
        pixels, _, _ = _inputs()
        with torch.no_grad():
            out = model.vision_model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
        assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 4, 26, 26)
        torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, 4, 26))
        assert len(out.hidden_states) == 3
    finally:
        model.set_attn_implementation("sdpa")


def test_bf16_forward_close_to_float32(model):
    pixels, ids, mask = _inputs()
    half = TipsModel(model.config).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        out = half(input_ids=ids, pixel_values=pixels.bfloat16(), attention_mask=mask)
    assert out.image_embeds.dtype == torch.bfloat16
    # documented bf16 tolerance: normalised embeddings within 3e-2 of float32
    torch.testing.assert_close(out.image_embeds.float(), full.image_embeds, atol=3e-2, rtol=0)
    torch.testing.assert_close(out.text_embeds.float(), full.text_embeds, atol=3e-2, rtol=0)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(2)
    config = tiny_config()
    plain = TipsModel(config).train()
    ckpt = TipsModel(config).train()
    ckpt.load_state_dict(plain.state_dict())
    enable = getattr(ckpt, "activation_checkpointing_enable", None) or ckpt.gradient_checkpointing_enable
    enable()
    towers = (ckpt.vision_model, ckpt.text_model)
    assert all(layer.gradient_checkpointing for tower in towers for layer in tower.encoder.layers)
    pixels, ids, mask = _inputs(batch=4)
    ids[2:, :4] = 9
    mask[2:, :4] = 1
    calls = {}  # attention calls per model: a checkpointed block runs again in backward

    def count(name):
        def hook(*_):
            calls[name] = calls.get(name, 0) + 1

        return hook

    losses = []
    for name, m in (("plain", plain), ("ckpt", ckpt)):
        for tower in (m.vision_model, m.text_model):
            for layer in tower.encoder.layers:
                (layer.attention if tower is m.vision_model else layer.self_attn).register_forward_hook(count(name))
        loss = m(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
        loss.backward()
        losses.append(loss)
    blocks = sum(len(tower.encoder.layers) for tower in towers)
    assert calls == {"plain": blocks, "ckpt": 2 * blocks}
    # Same weights, inputs and operations (recomputation replays the forward exactly, no dropout here).
    torch.testing.assert_close(losses[1], losses[0], atol=0, rtol=0)
    checked = 0
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if name.endswith("mask_token"):  # no masking in this forward: no gradient in either model
            assert a.grad is None and b.grad is None
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
        checked += 1
    assert checked == len(list(plain.parameters())) - 1


def test_loss_is_mean_of_both_heads(model):
    pixels, ids, mask = _inputs()
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
    targets = torch.arange(3)
    ce = torch.nn.functional.cross_entropy

    def sym(logits):
        return (ce(logits, targets) + ce(logits.t(), targets)) / 2

    torch.testing.assert_close(out.loss, (sym(out.logits_per_image) + sym(out.synthetic_logits_per_image)) / 2)
    with pytest.raises(ValueError, match="one text per image"):
        model(input_ids=ids[:2], pixel_values=pixels, attention_mask=mask[:2], return_loss=True)


def test_mask_token_replaces_masked_patches(model):
    pixels, _, _ = _inputs(batch=2)
    masked = torch.zeros(2, 24, dtype=torch.bool)
    masked[0, :12] = True
    with torch.no_grad():
        a = model.vision_model.embeddings(pixels)
        b = model.vision_model.embeddings(pixels, bool_masked_pos=masked)
        pos = model.vision_model.embeddings.patch_position_embeddings(4, 6)[0]
    torch.testing.assert_close(b[1], a[1])
    torch.testing.assert_close(b[0, 2:14], model.vision_model.embeddings.mask_token + pos[:12])
    torch.testing.assert_close(b[0, 14:], a[0, 14:])
    with pytest.raises(ValueError, match="bool_masked_pos must have shape"):
        model.vision_model(pixel_values=pixels, bool_masked_pos=masked[:, :10])


def test_position_interpolation_rules(model):
    emb = model.vision_model.embeddings
    assert emb.grid_size == 4
    torch.testing.assert_close(emb.patch_position_embeddings(4, 4), emb.position_embeddings[:, 1:])
    grid = emb.patch_position_embeddings(8, 6)
    assert grid.shape == (1, 48, 32)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model.vision_model(pixel_values=torch.rand(1, 3, 112, 84), interpolate_pos_encoding=False)


@pytest.mark.parametrize("size", [(57, 56), (56, 60), (13, 13)])
def test_bad_image_size_is_clear(model, size):
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        model.vision_model(pixel_values=torch.rand(1, 3, *size))


def test_bad_inputs_are_clear(model):
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, height, width\)"):
        model.vision_model(pixel_values=torch.rand(1, 4, 56, 56))
    with pytest.raises(ValueError, match="at most 16"):
        model.text_model(input_ids=torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="needs pixel_values, input_ids"):
        model()


def test_init_values():
    torch.manual_seed(0)
    model = TipsModel(tiny_config())
    emb = model.vision_model.embeddings
    assert emb.mask_token.abs().max() == 0
    assert emb.cls_token.abs().max() < 1e-4 and emb.register_tokens.abs().max() < 1e-4
    assert 0.01 < emb.position_embeddings.std() < 0.03
    assert torch.allclose(model.log_temperature, torch.full((2,), math.log(model.config.temperature_init_value)))
    for layer in model.vision_model.encoder.layers:
        assert torch.all(layer.layer_scale1.lambda1 == model.config.vision_config.layerscale_value)
    # Token embeddings start at std 1/sqrt(width) (flax Embed), so after the sqrt(width) scaling they are unit-size
    # like the sinusoidal positions (std 0.02 left every caption's mean-pooled embedding nearly the same).
    tokens = model.text_model.embeddings.token_embedding.weight
    width = model.config.text_config.hidden_size
    assert abs(float(tokens.std()) * width**0.5 - 1.0) < 0.1


def test_towers_alone_and_from_full_checkpoint(tmp_path):
    torch.manual_seed(3)
    full = TipsModel(tiny_config()).eval()
    full.save_pretrained(tmp_path)
    vision = TipsVisionModel.from_pretrained(tmp_path / "", config=full.config.vision_config).eval()
    text = TipsTextModel.from_pretrained(tmp_path, config=full.config.text_config).eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            vision(pixel_values=pixels).last_hidden_state, full.vision_model(pixel_values=pixels).last_hidden_state
        )
        torch.testing.assert_close(
            text(input_ids=ids, attention_mask=mask).pooler_output,
            full.text_model(input_ids=ids, attention_mask=mask).pooler_output,
        )


def test_save_load_roundtrip_exact(tmp_path):
    torch.manual_seed(4)
    model = TipsModel(tiny_config("swiglu")).eval()
    model.save_pretrained(tmp_path)
    loaded = TipsModel.from_pretrained(tmp_path).eval()
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert (tmp_path / "modeling_tips.py").is_file() and (tmp_path / "configuration_tips.py").is_file()
