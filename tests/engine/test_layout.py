"""Row sizing of the packed layout: the cost model, its choice, and a model's attention span (hand-worked)."""

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from alignkit.engine import SequenceScorer
from alignkit.engine.layout import best_row_capacity, packed_layout, packing_cost

SIZES = [197, 144, 112, 101]  # prompt + responses of four prompt groups (the SmolLM2 benchmark's first step)


def test_packing_cost_counts_padding_and_attention():
    # capacity 197: first-fit decreasing puts every group in its own row (144 + 112 > 197): 4 rows x 197
    assert packing_cost(SIZES, 197, 3000) == pytest.approx(4 * 197 * (1 + 197 / 3000))
    # capacity 277: rows [197], [144, 112], [101] -> 3 rows padded to 256
    assert packing_cost(SIZES, 277, 3000) == pytest.approx(3 * 256 * (1 + 256 / 3000))
    assert packing_cost(SIZES, 554, 3000) == pytest.approx(554 * (1 + 554 / 3000))  # one row, no padding


def test_best_row_capacity_trades_padding_against_attention():
    assert best_row_capacity(SIZES, 3000) == 554  # 656 against 840 (one group per row) and 834 (three rows)
    # attention as dear as the matmuls at 100 positions: 4 x 197 x 2.97 = 2340 beats 554 x 6.54 = 3623
    assert best_row_capacity(SIZES, 100) == 197
    assert best_row_capacity([], 100) == 1


def test_packed_layout_sizes_rows_by_attention_span():
    prompts = [[1] * 97, [2] * 44, [3] * 12, [4] * 1]
    responses = [[[5] * 100], [[6] * 100], [[7] * 100], [[8] * 100]]  # groups of 197, 144, 112, 101
    assert packed_layout(prompts, responses, 1, 0).input_ids.shape == (4, 197)
    assert packed_layout(prompts, responses, 1, 0, attention_span=3000).input_ids.shape == (1, 554)
    assert packed_layout(prompts, responses, 1, 0, attention_span=100).input_ids.shape == (4, 197)
    assert packed_layout(prompts, responses, 1, 0, row_capacity=300, attention_span=3000).input_ids.shape[1] <= 300


def test_attention_span_of_a_llama():
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    # one layer's matmuls: q 32x32 + k, v 32x16 each + o 32x32 + gate, up, down 3 x 32x64 = 9216; heads x head_dim 32
    assert SequenceScorer(LlamaForCausalLM(cfg)).attention_span == 9216 / (2 * 32)
