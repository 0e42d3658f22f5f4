"""A tokenizer telos builds reads text the same way after a save and reload.

transformers 5's ``AutoTokenizer`` rebuilds the tokenizer of a ``qwen2`` model directory
from its model type and swaps in Qwen2's stock pre-tokenizer; ``load_tokenizer`` must load
the saved one instead, or a model trains on one split of its text and runs on another.
"""

from __future__ import annotations

from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer, load_tokenizer

CORPUS = ["Vitals: health 9/9, food 9/9.\n1. collect tree x3\n2. place table\n"] * 40 + [
    "Task: make_wood_pickaxe\nInventory: wood 2, sapling 1.\n"
] * 40
TEXT = "Task: make_wood_pickaxe\nVitals: health 9/9, food 9/9.\n1. collect tree x3\n2. place table\n"


def test_reloaded_tokenizer_splits_text_as_trained(tmp_path):
    for cross_spaces in (False, True):
        tok = build_tokenizer(CORPUS, 300, cross_spaces=cross_spaces)
        model = build_tiny_model(
            TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), tok
        )
        out = tmp_path / f"cross{cross_spaces}"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        reloaded = load_tokenizer(str(out))
        assert reloaded(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
        assert reloaded.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT
