"""The post-training building blocks (llm/post_training.py), each against a formula written
another way or PyTorch's own op."""

import dataclasses
import math

import torch
import torch.nn.functional as F
from conftest import SMALL, tiny_tokenizer

from llm.post_training import (
    compute_entropy,
    dpo_loss,
    get_response_log_probs,
    masked_mean,
    masked_normalize,
    per_instance_dpo_loss,
    sft_microbatch_train_step,
    tokenize_prompt_and_output,
)
from llm.transformer import Transformer

CONFIG = dataclasses.replace(SMALL, vocab_size=300)  # holds tiny_tokenizer's ids
PROMPTS = ["the cat sat", "a"]
OUTPUTS = [" on the mat", " cat and the hat"]


def test_the_response_mask_marks_exactly_the_output_tokens():
    """labels[mask] are the output's ids, in order: a mask one token early or late fails."""
    tokenizer = tiny_tokenizer()
    batch = tokenize_prompt_and_output(PROMPTS, OUTPUTS, tokenizer, pad_id=7)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["response_mask"]
    longest = max(
        len(tokenizer.encode(p)) + len(tokenizer.encode(o))
        for p, o in zip(PROMPTS, OUTPUTS, strict=True)
    )
    assert ids.shape == labels.shape == mask.shape == (2, longest - 1)
    for i, (prompt, output) in enumerate(zip(PROMPTS, OUTPUTS, strict=True)):
        whole = tokenizer.encode(prompt) + tokenizer.encode(output)
        assert labels[i][mask[i]].tolist() == tokenizer.encode(output)
        assert ids[i, : len(whole) - 1].tolist() == whole[:-1]
        assert labels[i, : len(whole) - 1].tolist() == whole[1:]
        assert (labels[i, len(whole) - 1 :] == 7).all() and not mask[i, len(whole) - 1 :].any()


def test_prompt_positions_get_no_gradient():
    """The SFT loss's gradient is zero at every prompt and padding position and -1/N at each
    of the N response positions (normalize_constant = N / batch: the per-token mean)."""
    batch = tokenize_prompt_and_output(PROMPTS, OUTPUTS, tiny_tokenizer())
    mask = batch["response_mask"]
    log_probs = torch.randn(mask.shape, requires_grad=True)
    n = mask.sum().item()
    loss, meta = sft_microbatch_train_step(log_probs, mask, 2, normalize_constant=n / 2)
    assert meta["response_tokens"] == n
    torch.testing.assert_close(loss, -(log_probs[mask].sum() / n / 2).detach())
    assert (log_probs.grad[~mask] == 0).all()
    torch.testing.assert_close(log_probs.grad[mask], torch.full((n,), -1 / n / 2))


def test_entropy_equals_torchs_and_is_stable():
    logits = torch.randn(3, 5, 11) * 4
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(compute_entropy(logits), expected)
    huge = torch.tensor([[1e4, 0.0, -1e4]])
    assert torch.isfinite(compute_entropy(huge)).all()
    torch.testing.assert_close(compute_entropy(torch.zeros(1, 8)), torch.tensor([math.log(8)]))


def test_response_log_probs_are_minus_the_cross_entropy():
    torch.manual_seed(0)
    model = Transformer(CONFIG)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 9))
    labels = torch.randint(0, CONFIG.vocab_size, (2, 9))
    out = get_response_log_probs(model, ids, labels, return_token_entropy=True)
    logits = model(ids)
    expected = -F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    torch.testing.assert_close(out["log_probs"], expected)
    weights = torch.randn(2, 9)  # the gradients too, through any weighting of the positions
    ours = torch.autograd.grad((out["log_probs"] * weights).sum(), model.lm_head.weight)[0]
    theirs = torch.autograd.grad((expected * weights).sum(), model.lm_head.weight)[0]
    torch.testing.assert_close(ours, theirs)
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(out["token_entropy"], entropy)


def test_masked_mean_and_normalize():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    assert math.isclose(masked_mean(x, mask).item(), (1 + 3 + 6) / 3, rel_tol=1e-6)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 6.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([1.0, math.nan, 4.5]),
                               equal_nan=True)  # fmt: skip
    assert masked_normalize(x, mask, 2.0).item() == 5.0
    torch.testing.assert_close(masked_normalize(x, mask, 2.0, dim=-1), torch.tensor([2.0, 3.0]))


def test_dpo_loss_on_a_hand_built_example():
    # policy-minus-reference of the chosen: -1 - (-2) = 1; of the rejected: -3 - (-2.5) = -0.5
    loss = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]),
        beta=0.1,
    )  # fmt: skip
    assert math.isclose(loss.item(), math.log(1 + math.exp(-0.1 * 1.5)), rel_tol=1e-6)


def test_dpo_with_chosen_equal_to_rejected_is_log_2():
    torch.manual_seed(1)
    policy, reference = Transformer(CONFIG), Transformer(CONFIG)
    loss = per_instance_dpo_loss(policy, reference, tiny_tokenizer(), 0.1, "ab", "cd", "cd")
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)


def test_per_instance_dpo_loss_equals_the_formula():
    """Log-probabilities summed by hand from the logits, with F.cross_entropy."""
    torch.manual_seed(2)
    policy, reference = Transformer(CONFIG), Transformer(CONFIG)
    tokenizer, beta = tiny_tokenizer(), 0.5

    def logp(model, prompt: str, response: str) -> float:
        p, r = tokenizer.encode(prompt), tokenizer.encode(response)
        ids = torch.tensor([p + r])
        logits = model(ids[:, :-1])[0, len(p) - 1 :]
        return -F.cross_entropy(logits, ids[0, len(p) :], reduction="sum").item()

    prompt, chosen, rejected = "the cat", " sat on", " ran off"
    margin = (logp(policy, prompt, chosen) - logp(reference, prompt, chosen)) - (
        logp(policy, prompt, rejected) - logp(reference, prompt, rejected)
    )
    expected = math.log(1 + math.exp(-beta * margin))
    loss = per_instance_dpo_loss(policy, reference, tokenizer, beta, prompt, chosen, rejected)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
