"""Prompt templates for the new task, the seed's, byte for byte.

`PROMPTS` maps a name to a Python format string with one field, ``{problem}``.
The extra name ``chat`` stands for the model's own chat template: keeptune does
not know it without a tokenizer, so the caller passes a callable that turns the
problem into the chat-formatted prompt (for example a wrapper around
``tokenizer.apply_chat_template``).
"""
from __future__ import annotations

from typing import Callable, Optional

from keeptune.core.errors import DataError

PROMPTS: dict[str, str] = {
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{problem}\n\n### Response:"
    ),
    "math": (
        "Below is an instruction that describes a grade school math problem. Write a response "
        "that gives the correct answer.\n\n### Instruction:\n{problem}\n\n### Response:"
    ),
    "none": "{problem}",
}

# The seed's SQuAD prompt, byte for byte, over the fields of a SQuAD sample.
SQUAD_SEED = ("Read the passage and answer the question below.\n\n### Instruction:\n{passage}"
              "\n\n### Input:\n{question}\n\n### Response:")
# Every prompt a task spec can name.
NAMED_PROMPTS: dict[str, str] = {"squad-seed": SQUAD_SEED, **PROMPTS}

CHAT = "chat"
PROMPT_NAMES: tuple[str, ...] = (*PROMPTS, CHAT)

# How MindFormers turned one conversation into a training sequence (Vicuna template).
# BOS (<|begin_of_text|>) and EOS (<|end_of_text|>) are token ids added around this
# text by the training code, not part of the string.
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_TEMPLATE = VICUNA_SYSTEM + " USER: {prompt} ASSISTANT: {answer}"
# How a prompt and its answer become one training sequence (keeptune.train.records).
FORMATS: tuple[str, ...] = ("plain", "vicuna", "chat")


def format_prompt(
    name: str, problem: str, chat_template: Optional[Callable[[str], str]] = None
) -> str:
    """Render ``problem`` with the named prompt template.

    Args:
        name: One of ``alpaca``, ``math``, ``none`` or ``chat``.
        problem: The problem text.
        chat_template: Required for ``chat``: turns the problem into the model's
            chat-formatted prompt.

    Raises:
        ValueError: Unknown name, or ``chat`` without a callable.
    """
    if name == CHAT:
        if chat_template is None:
            raise ValueError("prompt 'chat' needs a chat_template callable (from the tokenizer)")
        return chat_template(problem)
    if name not in PROMPTS:
        raise ValueError(f"unknown prompt {name!r}; choose one of {', '.join(PROMPT_NAMES)}")
    return PROMPTS[name].format(problem=problem)


def unwrap_prompt(text: str) -> str:
    """The problem inside a prompt rendered by one of `PROMPTS` (the text itself if none fits)."""
    for name in ("alpaca", "math"):
        head, tail = PROMPTS[name].split("{problem}")
        if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
            return text[len(head) : len(text) - len(tail)]
    return text


def sequence_bos(fmt: str, add_bos: Optional[bool] = None) -> bool:
    """Whether BOS goes before the prompt: the vicuna format puts it there unless ``add_bos`` says otherwise."""
    return fmt == "vicuna" if add_bos is None else add_bos


def sequence_prompt(prompt: str, fmt: str, tokenizer) -> str:
    """The text a model reads before its answer in sequence format ``fmt`` (BOS/EOS ids aside).

    Training and evaluation both use it, so a model is evaluated on exactly the
    prompt it was trained after.
    """
    if fmt == "plain":
        return prompt
    if fmt == "vicuna":
        return f"{VICUNA_SYSTEM} USER: {prompt} ASSISTANT:"
    if fmt == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("data.format=chat needs a tokenizer with a chat template, and this one has none; "
                            "use data.format=plain or vicuna")
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    raise DataError(f"unknown sequence format {fmt!r}; choose one of {', '.join(FORMATS)}")
