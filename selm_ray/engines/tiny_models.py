"""Tiny models of the paper recipes' architecture families, for dry runs on CPU.

A dry run (``selm-ray train CONFIG --dry-run``) swaps a 7B-70B model for one of these: the same
model class and the same kind of tokenizer, with every size cut down, so that each code path the
real run takes (dtype, ZeRO stage, judge kind, weight publication, the tokenizer's quirks) runs
here in minutes. Random weights: a dry run checks the plumbing, not the learning.

Mistral (Zephyr) and Llama-2 use SentencePiece tokenizers, where "4" on its own is two tokens
("\u2581", "4"): the expected-score judge must refuse them by name, the generate judge must work.
The tokenizer built here has that property (a byte-level BPE like Llama-3's has not).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

ZEPHYR_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    """Training text for the tokenizer: the bundled prompts and answers."""
    texts = []
    for name in ("seed_prompts.jsonl", "sft_ift.jsonl", "sft_eft.jsonl", "ifeval_tasks.jsonl"):
        for line in resources.files("selm_ray.assets").joinpath(name).read_text().splitlines():
            if line.strip():
                texts += [v for v in json.loads(line).values() if isinstance(v, str)]
    return texts + ["Score: 0 1 2 3 4 5", "<|system|> <|user|> <|assistant|>"]


def sentencepiece_style_tokenizer(vocab_size: int = 1024):
    """A BPE tokenizer with SentencePiece's word-boundary marker and single-digit pieces (as the
    Llama-2 / Mistral tokenizers), trained on the bundled text; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=list("0123456789"), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    fast.chat_template = ZEPHYR_TEMPLATE
    return fast


def build_tiny_family_model(out: str | Path, family: str, seed: int = 0, tokenizer=None,
                            num_layers: int = 2, hidden_size: int = 64) -> Path:
    """A random ``family`` ("mistral" | "llama") causal LM with a SentencePiece-style tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    tok = tokenizer or sentencepiece_style_tokenizer()
    config_cls, model_cls = {"mistral": (MistralConfig, MistralForCausalLM),
                             "llama": (LlamaConfig, LlamaForCausalLM)}[family]
    # head_dim 32: vLLM's CPU attention supports head sizes from 32
    cfg = config_cls(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                     num_hidden_layers=num_layers, num_attention_heads=hidden_size // 32, num_key_value_heads=1,
                     max_position_embeddings=4096, tie_word_embeddings=False,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = model_cls(cfg).to(torch.float32)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
