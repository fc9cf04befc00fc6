"""Prompt templates, byte for byte from SPEC section 2."""
from __future__ import annotations

import pytest

from keeptune.data.prompts import PROMPTS, VICUNA_TEMPLATE, format_prompt, unwrap_prompt

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.\n\n### Instruction:\nQ\n\n### Response:")
MATH = ("Below is an instruction that describes a grade school math problem. Write a response "
        "that gives the correct answer.\n\n### Instruction:\nQ\n\n### Response:")


def test_templates_byte_for_byte():
    assert format_prompt("alpaca", "Q") == ALPACA
    assert format_prompt("math", "Q") == MATH
    assert format_prompt("none", "Q") == "Q"
    assert set(PROMPTS) == {"alpaca", "math", "none"}


def test_problem_with_braces_is_not_formatted_again():
    assert format_prompt("none", "{x} = {y}") == "{x} = {y}"


def test_chat_needs_a_callable_and_unknown_names_fail():
    assert format_prompt("chat", "Q", chat_template=lambda p: f"<user>{p}") == "<user>Q"
    with pytest.raises(ValueError, match="chat_template"):
        format_prompt("chat", "Q")
    with pytest.raises(ValueError, match="unknown prompt"):
        format_prompt("vicuna", "Q")


def test_vicuna_wrapper():
    assert VICUNA_TEMPLATE.format(prompt="P", answer="A") == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: P ASSISTANT: A"
    )


def test_unwrap_prompt_inverts_the_templates():
    assert unwrap_prompt(ALPACA) == "Q" and unwrap_prompt(MATH) == "Q"
    assert unwrap_prompt("plain problem") == "plain problem"
