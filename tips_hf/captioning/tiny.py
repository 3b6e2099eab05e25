"""Tiny randomly initialised captioners saved with their processors, for offline tests and CPU benchmarks.

Their captions are word salad from a ~20-word vocabulary; what they exercise is the plumbing: the processors, the
prompt conventions, batched deterministic generation, prompt stripping. `initializer_range` 0.2 (not 0.02) makes the
random captions depend on the image.
"""

from __future__ import annotations

import os

import torch

WORDS = ("a an the photo of red blue green square circle triangle on left right above below small large with "
         "and").split()


def _word_level(specials: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: i for i, word in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def tiny_blip(folder: str | os.PathLike, seed: int = 0, std: float = 0.2) -> str:
    """A 2-layer BLIP captioner (BlipForConditionalGeneration) + BlipProcessor (WordLevel tokenizer) in `folder`."""
    from tokenizers import processors
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        PreTrainedTokenizerFast,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]"]
    tokenizer = _word_level(specials)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", bos_token="[DEC]")
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, initializer_range=std),
        text_config=dict(vocab_size=len(specials) + len(WORDS), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, encoder_hidden_size=32,
                         max_position_embeddings=256, bos_token_id=4, pad_token_id=0, sep_token_id=3, eos_token_id=3,
                         initializer_range=std),
        projection_dim=32, initializer_range=std,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=fast)
    processor.save_pretrained(folder)
    return str(folder)


def tiny_paligemma(folder: str | os.PathLike, seed: int = 0, std: float = 0.2) -> str:
    """A 2-layer PaliGemma (SigLIP + Gemma, 28-px images = 4 image tokens) + PaliGemmaProcessor in `folder`; the task
    prompts `caption en` / `describe en` are in its vocabulary."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        PreTrainedTokenizerFast,
        SiglipImageProcessor,
    )

    specials = ["<pad>", "<unk>", "<eos>", "<bos>"]
    tokenizer = _word_level(specials + ["caption", "describe", "en"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>", bos_token="<bos>")
    image_processor = SiglipImageProcessor(size={"height": 28, "width": 28})
    image_processor.image_seq_length = 4
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=fast)  # adds <image> and loc tokens
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
                           projection_dim=32),
        text_config=dict(model_type="gemma", vocab_size=len(processor.tokenizer), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, pad_token_id=0, eos_token_id=2, bos_token_id=3, initializer_range=std),
        image_token_index=processor.image_token_id, projection_dim=32, initializer_range=std,
    )
    torch.manual_seed(seed)
    PaliGemmaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


# a LLaVA-1.5-style conversation: "USER: <image> <question> ASSISTANT:"
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image> ' }}{% else %}{{ item['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def tiny_llava(folder: str | os.PathLike, seed: int = 0, std: float = 0.2) -> str:
    """A 2-layer LLaVA (CLIP vision + Llama, 28-px images = 4 image tokens) + LlavaProcessor with a chat template in
    `folder`: the chat-VLM path (prompt through the processor's chat template)."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    tokenizer = _word_level(specials + "USER: ASSISTANT: Describe this image in one short sentence.".split())
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=["<image>"])
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=14,
                               vision_feature_select_strategy="default", chat_template=LLAVA_CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=28, patch_size=14, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3, initializer_range=std),
        image_token_index=fast.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", initializer_range=std,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def tiny_florence2(folder: str | os.PathLike, seed: int = 0, std: float = 0.2) -> str:
    """A tiny Florence-2 (1-block-per-stage DaViT + 1-layer BART encoder-decoder, 64-px images = 5 image tokens) +
    Florence2Processor in `folder`: the encoder-decoder task-prompt path (`<CAPTION>` becomes the processor's
    question; the answer comes back without the prompt)."""
    from tokenizers import processors
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        PreTrainedTokenizerFast,
    )

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    questions = "What does the image describe? Describe with paragraph what is shown in image.".split()
    tokenizer = _word_level(specials + [w for w in dict.fromkeys(questions) if w not in WORDS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64},
                                         do_center_crop=False)
    image_processor.image_seq_length = 5  # a 2 x 2 grid after the 32x downsampling + 1 pooled token
    processor = Florence2Processor(image_processor=image_processor, tokenizer=fast)
    config = Florence2Config(
        vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 1, 1, 1],
                           num_groups=[1, 1, 1, 1], window_size=2, projection_dim=32, drop_path_rate=0.0,
                           max_temporal_embeddings=1, max_position_embeddings=8, initializer_range=std),
        text_config=dict(model_type="bart", vocab_size=len(fast), d_model=32, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                         decoder_start_token_id=3, forced_bos_token_id=2, init_std=std),
        image_token_id=fast.image_token_id,
    )
    torch.manual_seed(seed)
    Florence2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)
