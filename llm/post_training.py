"""The building blocks of post-training (supervised fine-tuning and DPO), with the semantics of
CS336 assignment 5, each a small function on tensors:

    tokenize_prompt_and_output  prompt + output -> input ids, labels, the response mask
    get_response_log_probs      log p(label | prefix) of each position (and its entropy)
    compute_entropy             the entropy of each position's next-token distribution
    masked_mean / masked_normalize   sums over the response tokens only
    sft_microbatch_train_step   the SFT loss of one micro-batch, backpropagated
    dpo_loss / per_instance_dpo_loss   Direct Preference Optimization (Rafailov et al., 2023)

The response mask is what makes fine-tuning teach answers rather than questions: the loss is
-log p of the response tokens alone, so the prompt (the user's turn, the template's markers)
is read but never predicted.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm.bpe_tokenizer import BpeTokenizer


def tokenize_prompt_and_output(
    prompt_strs: list[str], output_strs: list[str], tokenizer: BpeTokenizer, pad_id: int = 0
) -> dict[str, Tensor]:
    """Each prompt and output encoded apart and joined, right-padded with pad_id to the longest:
    input_ids = joined[:-1], labels = joined[1:] (the next token of each position), and
    response_mask (bool) = which labels are output tokens. All (batch, longest - 1)."""
    rows, masks = [], []
    for prompt, output in zip(prompt_strs, output_strs, strict=True):
        prompt_ids, output_ids = tokenizer.encode(prompt), tokenizer.encode(output)
        rows.append(prompt_ids + output_ids)
        masks.append([False] * len(prompt_ids) + [True] * len(output_ids))
    return pad_examples(rows, masks, pad_id)


def pad_examples(
    rows: list[list[int]], masks: list[list[bool]], pad_id: int = 0
) -> dict[str, Tensor]:
    """Token rows and their per-token masks (True: the token is predicted) as a padded batch:
    input_ids and labels shifted by one, response_mask over the labels; padding is masked."""
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, (row, row_mask) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = torch.tensor(row_mask, dtype=torch.bool)
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "response_mask": mask[:, 1:]}


def compute_entropy(logits: Tensor) -> Tensor:
    """H = -sum_v p_v log p_v of softmax(logits) over the last dim, with log p = logits -
    logsumexp(logits) (no overflow, no log 0). (..., vocab) -> (...)."""
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -(log_p.exp() * log_p).sum(dim=-1)


def get_response_log_probs(
    model: nn.Module, input_ids: Tensor, labels: Tensor, return_token_entropy: bool = False
) -> dict[str, Tensor]:
    """log p(labels[b, t] | input_ids[b, :t+1]) under the model, (batch, seq); with
    return_token_entropy also the entropy of each position's distribution, (batch, seq)."""
    logits = model(input_ids).float()  # (batch, seq, vocab)
    log_probs = F.log_softmax(logits, dim=-1)
    result = {"log_probs": log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)}
    if return_token_entropy:
        result["token_entropy"] = compute_entropy(logits)
    return result


def masked_normalize(
    tensor: Tensor, mask: Tensor, normalize_constant: float, dim: int | None = None
) -> Tensor:
    """The sum of tensor where mask is true (along dim, or all of it) / normalize_constant."""
    masked = tensor * mask
    return (masked.sum() if dim is None else masked.sum(dim=dim)) / normalize_constant


def masked_mean(tensor: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """The mean of tensor over the positions where mask is true (along dim, or all of it)."""
    return masked_normalize(tensor, mask, 1.0, dim) / (mask.sum() if dim is None else mask.sum(dim))


def sft_microbatch_train_step(
    policy_log_probs: Tensor,
    response_mask: Tensor,
    gradient_accumulation_steps: int,
    normalize_constant: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The SFT loss of a micro-batch, backpropagated: the response tokens' -log p summed per
    sequence / normalize_constant, averaged over the sequences, / gradient_accumulation_steps
    (so that the accumulated gradient is the step's). policy_log_probs, response_mask:
    (batch, seq). Returns (loss, {"response_tokens": count}).

    normalize_constant = (response tokens in the whole step) / (sequences in the whole step)
    makes the step's loss the mean over its response tokens (llm/finetune.py does this)."""
    per_sequence = masked_normalize(-policy_log_probs, response_mask, normalize_constant, dim=-1)
    loss = per_sequence.mean() / gradient_accumulation_steps
    loss.backward()
    return loss.detach(), {"response_tokens": response_mask.sum()}


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
) -> Tensor:
    """DPO's loss per pair: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), where each
    term is a response's summed log-probability under the policy or the frozen reference.
    (batch,) x 4 -> (batch,). Equal responses give log 2."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


def sequence_log_prob(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Each row's summed log-probability of its response tokens, (batch,)."""
    log_probs = get_response_log_probs(model, batch["input_ids"], batch["labels"])["log_probs"]
    return masked_normalize(log_probs, batch["response_mask"], 1.0, dim=-1)


def per_instance_dpo_loss(
    model: nn.Module,
    ref_model: nn.Module,
    tokenizer: BpeTokenizer,
    beta: float,
    prompt: str,
    response_chosen: str,
    response_rejected: str,
) -> Tensor:
    """The DPO loss of one (prompt, chosen, rejected) triple, the texts as given (render them
    with a chat template first), the reference's log-probabilities without gradient."""
    batch = tokenize_prompt_and_output(
        [prompt, prompt], [response_chosen, response_rejected], tokenizer
    )
    policy = sequence_log_prob(model, batch)
    with torch.no_grad():
        ref = sequence_log_prob(ref_model, batch)
    return dpo_loss(policy[0], policy[1], ref[0], ref[1], beta)
