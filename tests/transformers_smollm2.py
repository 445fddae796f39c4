"""transformers' results on SmolLM2-135M-Instruct from its GGUF file, the reference of
tests/test_smollm2.py: its tokenizer (as tokenizer.json text), the conversations of CHATS
rendered with the file's template, the chat prompt's ids, the logits on it, and 20 greedy tokens
after a story opening. Reading the file takes transformers about 20 s of Python, so
tests/conftest.py runs this script in a process of its own while the tests before run.

    uv run python tests/transformers_smollm2.py OUT.pt
"""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm.gguf_format import pretrained_path

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
STORY = "Once upon a time, in a village by the sea, there lived"
FOLLOW_UP = [*MESSAGES, {"role": "assistant", "content": "Paris."},
             {"role": "user", "content": "And of Italy?"}]  # fmt: skip
CHATS = [FOLLOW_UP, [{"role": "system", "content": "You are a pirate."}, *FOLLOW_UP]]


def main(out: str) -> None:
    torch.set_num_threads(1)
    path = pretrained_path("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()  # fmt: skip
    chat_ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    chat_ids = list(chat_ids["input_ids"] if hasattr(chat_ids, "keys") else chat_ids)
    story_ids = tokenizer.encode(STORY, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([chat_ids])).logits[0]
        greedy = model.generate(torch.tensor([story_ids]), do_sample=False, max_new_tokens=20)
    renders = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
               for chat in CHATS]  # fmt: skip
    results = {"chat_ids": chat_ids, "chat_logits": logits, "story_ids": story_ids,
               "story_greedy": greedy[0, len(story_ids):].tolist(), "chat_renders": renders,
               "tokenizer_json": tokenizer.backend_tokenizer.to_str()}  # fmt: skip
    torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
