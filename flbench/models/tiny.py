"""`tiny-llama`: a seeded, randomly initialised 4-block LLaMA with a byte-level tokenizer, for tests.

No download: the tokenizer is built in code (256 byte symbols + <pad>, <s>, </s>, no merges), and
the weights come from `torch.manual_seed(0)`, so every machine gets the same model.
"""
from __future__ import annotations

from pathlib import Path

import torch

from flbench.models.loader import LoadedModel, ModelEntry, models, state_dict_sha256

SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tk = Tokenizer(tmodels.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(num_layers: int = 4):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=264,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.1,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build(seed: int = 0, num_layers: int = 4) -> LoadedModel:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(num_layers)).eval()
    return LoadedModel("tiny-llama", model, byte_tokenizer(), f"random init (seed {seed})", state_dict_sha256(model))


def load(home: Path, progress: bool) -> LoadedModel:
    return build()


models.register("tiny-llama")(ModelEntry("seeded random 4-block LLaMA (d=64) with a byte tokenizer; for tests", load))
