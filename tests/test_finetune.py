"""Fine-tuning (llm/finetune.py, llm/chat_data.py): the response mask of rendered
conversations, SFT and DPO runs, LoRA runs, exact resume, and bad input as one-line errors."""

import dataclasses
import json
import math

import pytest
import torch
from conftest import SMALL, ctrl_c_at_step, tiny_tokenizer

import llm.finetune as finetune_module
from llm.chat import CHATML, render_chat
from llm.chat_data import (
    ChatDataError,
    Example,
    conversation,
    encode_conversation,
    load_preferences,
    load_sft,
)
from llm.checkpoint import read_checkpoint, save_checkpoint
from llm.finetune import finetune, load_finetune_config, main, with_chat_tokens
from llm.loading import load
from llm.run_dir import read_metrics
from llm.stories.instructions import has_elements, instruction_data, score
from llm.transformer import Transformer

CHATS = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "the cat?"},
                  {"role": "assistant", "content": "a cat."},
                  {"role": "user", "content": "and then"},
                  {"role": "assistant", "content": "the end"}]},
    {"prompt": "hat", "completion": "the hat"},
]  # fmt: skip
PAIRS = [{"prompt": "cat", "chosen": "the cat", "rejected": "a dog"}] * 2


@pytest.fixture(autouse=True)
def no_plots(request, monkeypatch):
    """Drawing a run's plots takes most of a tiny run's time: only one test draws them."""
    if request.node.name != "test_sft_learns_the_replies_and_the_run_loads_as_a_chat_model":
        monkeypatch.setattr("llm.plots.plot_run", lambda run_dir: [])


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def source(tmp_path):
    """A tiny model checkpoint (context 96) with the tiny byte tokenizer, which lacks the chat
    tokens, and the same with them (for LoRA)."""
    paths = {}
    for name, tokenizer in [
        ("plain", tiny_tokenizer()),
        ("chat", with_chat_tokens(tiny_tokenizer())),
    ]:
        torch.manual_seed(0)
        config = dataclasses.replace(SMALL, vocab_size=tokenizer.vocab_size, context_length=96)
        tokenizer.save(tmp_path / f"{name}-tok")
        path = tmp_path / f"{name}.pt"
        save_checkpoint(Transformer(config), None, 0, path, tokenizer_dir=tmp_path / f"{name}-tok")
        paths[name] = str(path)
    return paths


def run_args(source: str, tmp_path, **overrides) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = {
        "model": source, "train_data": write_jsonl(tmp_path / "train.jsonl", CHATS * 4),
        "valid_data": write_jsonl(tmp_path / "valid.jsonl", CHATS), "run_dir": tmp_path / "run",
        "max_iters": 6, "batch_size": 4, "warmup_iters": 1, "log_interval": 2,
        "eval_interval": 3, "checkpoint_interval": 100, "device": "cpu", "max_lr": 3e-3,
        **overrides,
    }  # fmt: skip
    return [word for key, value in values.items() for word in (f"--{key}", str(value))]


def test_the_mask_covers_each_reply_and_its_end_of_turn_only():
    tokenizer = with_chat_tokens(tiny_tokenizer())
    messages = conversation(CHATS[0], "test")
    example = encode_conversation(messages, tokenizer, None)
    assert tokenizer.decode(example.ids) == render_chat(messages, CHATML, False)
    learnt = tokenizer.decode([i for i, m in zip(example.ids, example.mask, strict=True) if m])
    assert learnt == "a cat.<|im_end|>the end<|im_end|>"
    # The token before each reply is the template's "assistant\n": one off would take it or lose
    # the reply's first token.
    first = example.mask.index(True)
    assert tokenizer.decode(example.ids[first - 1 : first]) == "\n"
    assert tokenizer.decode(example.ids[first : first + 1]) == "a"
    last = encode_conversation(messages, tokenizer, None, last_only=True)
    assert tokenizer.decode([i for i, m in zip(last.ids, last.mask, strict=True) if m]) == (
        "the end<|im_end|>"
    )


def test_prompt_completion_is_a_user_turn_and_a_reply():
    tokenizer = with_chat_tokens(tiny_tokenizer())
    a = encode_conversation(conversation(CHATS[1], "x"), tokenizer, None)
    b = encode_conversation(
        [{"role": "user", "content": "hat"}, {"role": "assistant", "content": "the hat"}],
        tokenizer, None,
    )  # fmt: skip
    assert a == b


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "a", "completion": "b"}', "", "{not json"], "line 3: not valid JSON"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], "line 1: no assistant turn"),
        (['{"messages": [{"role": "bot", "content": "hi"}]}'], "role is 'bot'"),
        (['{"text": "hi"}'], "line 1: expected {'messages'"),
        (['{"prompt": "a", "completion": "' + "x" * 80 + '"}'], "line 1: 1"),
    ],
)
def test_bad_lines_are_errors_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    tokenizer = with_chat_tokens(tiny_tokenizer())
    with pytest.raises(ChatDataError, match=message.replace("{", r"\{").replace("[", r"\[")) as e:
        load_sft(path, tokenizer, None, 64)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_too_long_drop_leaves_the_long_ones_out(tmp_path):
    long = {"prompt": "a", "completion": "x" * 80}
    path = write_jsonl(tmp_path / "d.jsonl", [CHATS[1], long, CHATS[1]])
    examples, dropped = load_sft(path, with_chat_tokens(tiny_tokenizer()), None, 64, "drop")
    assert len(examples) == 2 and dropped == 1
    assert (
        "longer than the context"
        in pytest.raises(
            ChatDataError, load_sft, path, with_chat_tokens(tiny_tokenizer()), None, 64
        ).value.args[0]
    )


def test_preference_formats(tmp_path):
    tokenizer = with_chat_tokens(tiny_tokenizer())
    user = {"role": "user", "content": "cat"}
    messages = {"chosen": [user, {"role": "assistant", "content": "the cat"}],
                "rejected": [user, {"role": "assistant", "content": "a dog"}]}  # fmt: skip
    path = write_jsonl(tmp_path / "p.jsonl", [PAIRS[0], messages])
    (a, b), _ = load_preferences(path, tokenizer, None, 64)
    assert a == b


@pytest.mark.parametrize("lora", [False, True])
def test_resume_after_interrupt_is_exact(source, tmp_path, monkeypatch, lora):
    extra = {"lora": lora, "lora_dropout": 0.1 if lora else 0.0, "grad_accum_steps": 2}
    model = source["chat" if lora else "plain"]
    full = finetune(load_finetune_config(run_args(model, tmp_path / "full", **extra)))
    ctrl_c_at_step(monkeypatch, finetune_module, 3)
    part = finetune(load_finetune_config(run_args(model, tmp_path / "split", **extra)))
    monkeypatch.undo()
    assert part["interrupted"] and part["step"] == 4
    resumed = finetune(load_finetune_config(["--run_dir", str(tmp_path / "split/run"), "--resume"]))
    assert resumed["step"] == 6 and resumed["eval"]["loss"] == full["eval"]["loss"]
    a, b = read_checkpoint(tmp_path / "full/run"), read_checkpoint(tmp_path / "split/run")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    records = [r for r in read_metrics(tmp_path / "full/run") if r["type"] in ("train", "eval")]
    again = [r for r in read_metrics(tmp_path / "split/run") if r["type"] in ("train", "eval")]
    assert [(r["step"], r["loss"]) for r in records] == [(r["step"], r["loss"]) for r in again]


def test_sft_learns_the_replies_and_the_run_loads_as_a_chat_model(source, tmp_path):
    summary = finetune(load_finetune_config(run_args(source["plain"], tmp_path, max_iters=12)))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if r["type"] == "eval"]
    assert losses[-1] < losses[0]
    loaded = load(tmp_path / "run")  # the grown vocabulary and its tokenizer
    assert loaded.tokenizer.special_tokens[-2:] == ["<|im_start|>", "<|im_end|>"]
    assert loaded.model.config.vocab_size == loaded.tokenizer.vocab_size == 264
    assert summary["step"] == 12 and (tmp_path / "run/img/loss.png").is_file()


def test_a_lora_run_writes_the_merged_model_and_the_peft_files(source, tmp_path):
    finetune(load_finetune_config(run_args(source["chat"], tmp_path, lora="true", lora_rank=2)))
    base = load(source["chat"]).model.state_dict()
    merged = load(tmp_path / "run").model.state_dict()
    assert torch.equal(merged["embedding.weight"], base["embedding.weight"])  # frozen
    assert not torch.equal(
        merged["blocks.0.attn.qkv_proj.weight"], base["blocks.0.attn.qkv_proj.weight"]
    )
    config = json.loads((tmp_path / "run/adapter/adapter_config.json").read_text())
    assert config["r"] == 2 and config["peft_type"] == "LORA"


def test_dpo_starts_at_log_2_and_learns_the_preference(source, tmp_path):
    args = run_args(source["plain"], tmp_path, method="dpo", log_interval=1, max_iters=8,
                    train_data=write_jsonl(tmp_path / "p.jsonl", PAIRS),
                    valid_data=write_jsonl(tmp_path / "pv.jsonl", PAIRS))  # fmt: skip
    summary = finetune(load_finetune_config(args))
    train = [r for r in read_metrics(tmp_path / "run") if r["type"] == "train"]
    assert math.isclose(train[0]["loss"], math.log(2), rel_tol=1e-5)  # policy = reference
    assert summary["eval"]["loss"] < math.log(2) and summary["eval"]["accuracy"] == 1.0


def test_story_instructions_and_their_score():
    train, valid = instruction_data(30, 10, seed=3)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in valid}
    for record in train + valid:
        assert has_elements(record["completion"], record["elements"])
        assert all(e in record["prompt"] for e in record["elements"])
    stories = [r["completion"] for r in valid]
    assert score(stories, valid) == 1.0
    assert score(stories[1:] + stories[:1], valid) < 0.5  # another story lacks the elements
    assert not has_elements("a catalog", ["cat"])  # whole words only


def test_scoring_a_long_context_model_caps_each_reply_and_batches_the_prompts(monkeypatch):
    """SmolLM2's context is 8,192 tokens: a reply left to run to it would make the batch's KV
    cache that long (20 GB for 50 prompts). Replies are cut at twice the longest training reply,
    and prompts go in batches of eval_batch_size."""
    from types import SimpleNamespace

    tokenizer = with_chat_tokens(tiny_tokenizer())
    model = Transformer(dataclasses.replace(SMALL, vocab_size=tokenizer.vocab_size,
                                            context_length=8192))  # fmt: skip
    calls = []

    def fake_generate(model, ids, sampling):
        calls.append((len(ids), sampling.max_new_tokens))
        return [[] for _ in ids]

    monkeypatch.setattr(finetune_module, "generate", fake_generate)
    examples = [Example([1] * 40, [False] * 10 + [True] * 30),
                Example([1] * 60, [False] * 5 + [True] * 55)]  # fmt: skip
    run = SimpleNamespace(
        start=SimpleNamespace(tokenizer=tokenizer, template=None, end_of_turn=None),
        model=model, data=SimpleNamespace(train=examples), device=torch.device("cpu"),
        dtype=None, config=SimpleNamespace(eval_batch_size=4),
    )  # fmt: skip
    answers = finetune_module.generate_answers(run, [f"story {i}" for i in range(10)])
    assert answers == [""] * 10
    assert calls == [(4, 110), (4, 110), (2, 110)]


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"lora": "true", "lora_rank": 0}, 2, ["lora_rank must be at least 1, not 0"]),
        ({"lora": "true", "lora_targets": "qkv"}, 2, ["no matrix is named 'qkv'"]),
        ({"lora": "true"}, 2, ["has no chat tokens", "fine-tune it fully first"]),
        ({"method": "ppo"}, 2, ["method must be one of"]),
        ({"train_data": "{tmp}/nope.jsonl"}, 1, ["nope.jsonl: no such file"]),
        ({"train_data": "{tmp}/bad.jsonl"}, 1, ["bad.jsonl line 2: not valid JSON"]),
        ({"model": "{tmp}/nothing"}, 2, ["--model", "no such file or directory"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path, capsys, change, code, words):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{oops\n')
    change = {k: str(v).replace("{tmp}", str(tmp_path)) for k, v in change.items()}
    args = run_args(source["plain"], tmp_path, **change)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == code and err.startswith("error: ") and err.count("\n") == 1, err
    assert all(word in err for word in words), err
    assert not (tmp_path / "run").exists()


def test_the_sft_loss_is_the_mean_over_the_steps_response_tokens(source, tmp_path):
    """The first step's loss, the batch being every example in two micro-batches of unequal
    token counts: the sum of -log p over all their reply tokens / their number."""
    records = [CHATS[0], CHATS[1], CHATS[1], CHATS[1]]
    data = write_jsonl(tmp_path / "t.jsonl", records)
    args = run_args(source["plain"], tmp_path, log_interval=1, max_iters=1, grad_accum_steps=2,
                    train_data=data, valid_data="")  # fmt: skip
    finetune(load_finetune_config(args))
    first = next(r for r in read_metrics(tmp_path / "run") if r["type"] == "train")
    tokenizer = with_chat_tokens(load(source["plain"]).tokenizer)
    model = finetune_module.grow_vocab(load(source["plain"]).model, tokenizer.vocab_size)
    nats, count = 0.0, 0
    for record in records:
        example = encode_conversation(conversation(record, ""), tokenizer, None)
        ids, mask = torch.tensor(example.ids), torch.tensor(example.mask)
        with torch.no_grad():
            logits = model(ids[None, :-1])[0]
        losses = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
        nats += losses[mask[1:]].sum().item()
        count += int(mask[1:].sum())
    assert math.isclose(first["loss"], nats / count, rel_tol=1e-5)
