"""Scalar heads, the body of a causal LM, the last real token, and the per-token value model."""

import math

import pytest
import torch

from alignkit.models.heads import ScalarHead, ValueModel, backbone_of, last_token_index
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return build_tiny_model(build_tiny_tokenizer(), hidden_size=32, num_layers=2)


def test_scalar_head_shapes_and_inits():
    torch.manual_seed(0)
    head = ScalarHead(4095)
    assert head(torch.randn(2, 3, 4095)).shape == (2, 3)
    # weight std is 1/sqrt(H + 1) = 1/64; the bias starts at 0
    assert head.linear.weight.std().item() == pytest.approx(1 / math.sqrt(4096), rel=0.05)
    assert torch.all(head.linear.bias == 0)
    zeros = ScalarHead(8, init="zeros")
    assert torch.all(zeros(torch.randn(5, 8)) == 0)
    with pytest.raises(ValueError, match="unknown head init"):
        ScalarHead(8, init="xavier")


def test_scalar_head_computes_in_its_own_dtype():
    head = ScalarHead(8)
    assert head(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.float32


def test_last_token_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert last_token_index(right).tolist() == [2, 0, 3, 0]
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert last_token_index(left).tolist() == [3, 3]


def test_backbone_of_a_causal_lm_and_of_a_body(lm):
    body = backbone_of(lm)
    assert body is lm.model
    assert backbone_of(body) is body


def test_value_model_gives_one_value_per_token_unchanged_by_right_padding(lm):
    values = ValueModel(backbone_of(lm), ScalarHead(32)).eval()
    ids = torch.tensor([[0, 10, 11, 12, 1]])
    padded = torch.tensor([[0, 10, 11, 12, 1, 2, 2], [0, 13, 14, 1, 2, 2, 2]])
    mask = (padded != 2).long()
    with torch.no_grad():
        alone = values(ids, torch.ones_like(ids))  # (1, 5)
        batch = values(padded, mask)  # (2, 7)
    assert alone.shape == (1, 5) and batch.shape == (2, 7)
    torch.testing.assert_close(batch[0, :5], alone[0], rtol=1e-5, atol=1e-5)
