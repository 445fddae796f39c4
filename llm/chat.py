"""Chat templates: how a conversation becomes the one text an instruction-tuned model reads.

A chat model was fine-tuned on conversations written in a fixed format, and it answers well only
in that format. SmolLM2's (ChatML, from OpenAI) marks each turn with special tokens:

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant
                                 <- the model writes its reply here, and ends it with <|im_end|>

Models ship their format as a Jinja template (GGUF: tokenizer.chat_template; Hugging Face:
tokenizer_config.json), rendered with the messages and add_generation_prompt=True (the open
assistant turn). The template comes from a file, so it is rendered in Jinja's sandbox, which
refuses access to Python internals, as transformers does.
"""

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# For a model without a template of its own.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"  # ChatML's end of a turn: generation stops there


def render_chat(
    messages: list[dict[str, str]], template: str | None = None, add_generation_prompt: bool = True
) -> str:
    """The text of a conversation, messages [{"role": "user", "content": "..."}, ...], in the
    format of `template` (a Jinja chat template; None: ChatML)."""
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        compiled = environment.from_string(template or CHATML)
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt)
    except TemplateError as e:
        raise ValueError(f"the chat template failed: {e}") from None
