"""Probe sets for the paper's probe ablations: how many probes, and how long and what kind of text.

All but ``domain`` are generic (no task); ``paper-5`` is the embedder's default
(:data:`~hubdelta.embedder.probes.PAPER_PROBES`). The 15 templates beyond the paper's five paraphrase its
instruction header in the same Alpaca form.
"""

from __future__ import annotations

from dataclasses import replace

from hubdelta.embedder.probes import ALPACA_SUFFIX, PAPER_PROBES, ProbeSet

_MORE_HEADERS = (
    "Here is an instruction describing a task. Respond in a way that fulfils it.",
    "Read the instruction below and write a response that completes it.",
    "The request below describes a task. Write an appropriate response.",
    "Below you will find a task description. Answer it as well as you can.",
    "Complete the task that the following instruction describes.",
    "An instruction follows. Write a response that satisfies it.",
    "Consider the instruction below and produce a suitable response.",
    "Below is a request. Provide a response that carries it out.",
    "The following text gives an instruction. Respond so that the request is met.",
    "Use the instruction and input below to write a fitting response.",
    "Below is a task together with its input. Write the response it asks for.",
    "A user has given the instruction below. Write a helpful response.",
    "Follow the instruction below and write the response.",
    "The instruction below describes what is needed. Write a response that provides it.",
    "Below is an instruction paired with an input. Write a response that completes the request.",
)

PROBES_1 = replace(PAPER_PROBES, version="paper-1", templates=PAPER_PROBES.templates[:1])
PROBES_20 = replace(
    PAPER_PROBES, version="paper-20", templates=PAPER_PROBES.templates + tuple(h + ALPACA_SUFFIX for h in _MORE_HEADERS)
)
ONE_WORD = ProbeSet(
    version="one-word",
    templates=tuple(w + "{task}{input}" for w in ("Hello", "Answer", "Question", "Response", "Task")),
    task="",
    input="",
)
ONE_SENTENCE = ProbeSet(
    version="one-sentence",
    templates=(
        "Please write a response to this request.{task}{input}",
        "Answer the following question as well as you can.{task}{input}",
        "Complete the task that is described here.{task}{input}",
        "Give a helpful reply to the message below.{task}{input}",
        "Respond to the instruction you have been given.{task}{input}",
    ),
    task="",
    input="",
)
DOMAIN_MATH = replace(
    PAPER_PROBES,
    version="domain-math",
    task="Solve the word problem and show each step.",
    input="A box holds 12 pencils. How many pencils are in 7 boxes?",
)

BY_COUNT = {"1": PROBES_1, "5": PAPER_PROBES, "20": PROBES_20}
BY_CONTENT = {
    "one word": ONE_WORD,
    "one sentence": ONE_SENTENCE,
    "Alpaca template (paper)": PAPER_PROBES,
    "domain prompt (math)": DOMAIN_MATH,
}
