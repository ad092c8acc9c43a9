"""Degeneration: repetition measures of a response, and the rule that calls it degenerate.

In a notebook:

    degeneration_reason("<<Menu>>\n\n<<Menu>>\n\n<<Menu>>")   # "repeated_line"
    is_degenerate(response, ppl)                                # ppl: wb.fluency.perplexity, or None

The paper drops a steering layer when any validation output is degenerate, judged by GPT-2
perplexity < 2.5 (very low perplexity = the model is looping). `is_degenerate` keeps that rule
and adds some that need no model, each named by `degeneration_reason`: one string over and over
("<<<<<<…"), a line or sentence written three times, few distinct word bigrams, and text that
zlib compresses extremely well.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import TypedDict, Unpack

# Words and runs of punctuation, lower-cased: "I am. I am." -> i am . i am .
_TOKEN = re.compile(r"\w+|[^\w\s]+")


class Thresholds(TypedDict, total=False):
    """The thresholds of `degeneration_reason`, any of which a caller may change."""

    min_run: int
    max_repeats: int
    min_distinct_2: float
    min_words: int
    min_compression: float
    min_bytes: int
    min_ppl: float


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens, the unit of `distinct_n`."""
    return _TOKEN.findall(text.lower())


def distinct_n(text: str, n: int) -> float:
    """Unique n-grams / all n-grams over `words(text)`; NaN if there are fewer than n words.
    For example:

        distinct_n("I am. I am.", 2)   # bigrams (i,am) (am,.) (.,i) (i,am) (am,.) -> 3/5
    """
    w = words(text)
    grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def compression_ratio(text: str) -> float:
    """zlib-compressed size / raw size of the UTF-8 text (lower = more repetitive); NaN if empty.

    Natural English prose of a few hundred bytes gives about 0.55-0.75, a looping
    response under 0.2. Short texts exceed 1 (zlib's fixed overhead).
    """
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else math.nan


# A list marker at the start of a line ("-", "*", "1.", "2)", "#"), dropped before lines are
# compared, so that "1. Same item" and "2. Same item" are the same line.
_LIST_MARKER = re.compile(r"^\s*(?:[-*+>#\u2022]+|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def units(text: str) -> list[str]:
    """The text's lines, split into sentences, in order, as keys to compare them by.

        units("<<Menu>>\n\n1. Soup. Bread.\n2. Soup 2")   # ["menu", "soup", "bread", "soup 0"]

    A key is the unit's words, lower-cased, with every number written 0 and without a leading
    list marker, punctuation or markup: "<<Menu>>", "**Menu**" and "- Menu:" are all "menu";
    "SECTION 1" and "SECTION 2" are both "section 0". Units without a letter (`}`, `***`,
    `1.1`, blank lines) are left out.
    """
    keys = []
    for line in text.splitlines():
        for sentence in _SENTENCE_END.split(_LIST_MARKER.sub("", line)):
            key = re.sub(r"\d+", "0", " ".join(re.findall(r"\w+", sentence.lower())))
            if re.search(r"[^\W\d_]", key):
                keys.append(key)
    return keys


def repeated_unit(text: str, *, min_words_anywhere: int = 4) -> tuple[str, int]:
    """The most repeated line or sentence (a key of `units`) and how many times it is written;
    ("", 0) if the text has none.

        repeated_unit("<<Menu>>\n\n<<Menu>>\n\n<<Menu>>\n\nSoup.")      # ("menu", 3)
        repeated_unit("Pros: cheap.\nCons: slow.\nPros: light.\nCons: none.\nPros: quiet.")
        # ("pros cheap", 1): no line is written twice in a row, and each is short

    A unit with at least `min_words_anywhere` words (numbers do not count) is counted wherever
    it occurs; a shorter one only while it repeats in a row, because short labels and
    key-value lines recur in normal text ("Pros:" once per option, `"type": "fruit"` once per
    JSON record).
    """
    keys = units(text)
    best, streak = ("", 0), 0
    for i, key in enumerate(keys):
        streak = streak + 1 if i and keys[i - 1] == key else 1
        if streak > best[1]:
            best = (key, streak)
    counts: dict[str, int] = {}
    for key in keys:
        if sum(w != "0" for w in key.split()) >= min_words_anywhere:
            counts[key] = counts.get(key, 0) + 1
    return max([best, *counts.items()], key=lambda kv: kv[1])


def longest_run(text: str, *, max_unit: int = 32) -> tuple[str, int]:
    """The longest stretch of the text that is one string written three or more times back to
    back: (that string, the number of characters the stretch covers); ("", 0) if none.

        longest_run("<<<<<<<<")                 # ("<", 8)
        longest_run("so tiny tiny tiny tiny")   # (" tiny", 20): " tiny" four times
        longest_run("Ha ha ha")                 # ("", 0): case counts, "ha " is there twice

    The string has 1 to `max_unit` characters and is not all whitespace (indentation does not
    count). Characters are compared exactly: no lower-casing, no masking of numbers.
    """
    best = ("", 0)
    for size in range(1, max_unit + 1):
        for m in re.finditer(rf"((?!\s{{{size}}}).{{{size}}})\1{{2,}}", text, re.DOTALL):
            if len(m.group()) > best[1]:
                best = (m.group(1), len(m.group()))
    return best


def without_json(text: str) -> str:
    """The text without its JSON value, when it has one that parses: the stretch from the
    first `{` or `[` to the last `}` or `]`. Otherwise the text itself.

        without_json('Here: {"a": 1, "b": [1, 2]} Done.')   # "Here:  Done."
        without_json('{"a": {"a": {"a": {')                # unchanged: does not parse

    Records that share keys repeat word pairs ('"type": "fruit"' in every record) without
    looping; a nesting loop cut by the token limit does not parse, so it stays.
    """
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    end = max(text.rfind("}"), text.rfind("]"))
    if not starts or end < min(starts):
        return text
    start = min(starts)
    try:
        json.loads(text[start : end + 1])
    except ValueError:
        return text
    return text[:start] + text[end + 1 :]


def degeneration_reason(
    text: str,
    ppl: float | None = None,
    *,
    min_run: int = 20,
    max_repeats: int = 3,
    min_distinct_2: float = 0.5,
    min_words: int = 20,
    min_compression: float = 0.25,
    min_bytes: int = 200,
    min_ppl: float = 2.5,
) -> str:
    """Why a response is degenerate (empty, stuck or looping), or "" when it is not.

        degeneration_reason("<<Menu>>\n\n<<Menu>>\n\n<<Menu>>")   # "repeated_line"
        degeneration_reason(response, ppl)                          # "" = not degenerate

    The first of these criteria that holds:
      - "empty": the text is empty or whitespace only;
      - "run": one string of up to 32 characters written three or more times back to back,
        covering `min_run` (20) characters or more (`longest_run`): "<<<<<<…", "🎉🎉🎉…",
        "NANANA…", "tiny tiny tiny tiny …", a short line over and over. The model is stuck on
        a few tokens. Emphasis ("very very very") and markdown rules ("---") are shorter;
      - "repeated_line": a line or sentence written `max_repeats` (3) times or more
        (`repeated_unit`). In a row: a title written three times, "SECTION 1", "SECTION 2",
        "SECTION 3" with nothing in them. Anywhere, when it has 4 words or more: a sentence
        the text keeps coming back to. The items of a normal list differ, so it passes;
      - "distinct_2": at least `min_words` (20) words and `distinct_n(text, 2) < min_distinct_2`
        (0.5): phrases looping inside the lines ("I'm a math equation, and I'm a math
        equation. I'm a …"). Prose and lists score 0.7-1.0;
      - "compression": at least `min_bytes` (200) bytes and `compression_ratio(text) <
        min_compression` (0.25): repetition in stretches longer than the rules above see.
        Prose is about 0.6.
      These two statistics leave out a JSON value that parses (`without_json`): records that
      share keys score like a loop. JSON nesting itself over and over is cut by the token
      limit, does not parse, and is still judged;
      - "perplexity": `ppl < min_ppl` (2.5: the paper's GPT-2 rule; very predictable text is
        repetition). A NaN or missing `ppl` gives no verdict.
    Short answers ("My answer is yes.", a title and a paragraph) pass unless they repeat
    themselves: the statistics need `min_words` or `min_bytes` of text, and a statement said
    only twice ("I'm not sure. I'm not sure.") is left alone.

    The 2.5 floor is calibrated for GPT-2 scoring the response alone. A model scoring its own
    greedy output often lands below 2.5 on fluent text (code, plain lists), so for such
    perplexities pass a calibrated `min_ppl` (or `ppl=None`).
    """
    if not text.strip():
        return "empty"
    if longest_run(text)[1] >= min_run:
        return "run"
    if repeated_unit(text)[1] >= max_repeats:
        return "repeated_line"
    prose = without_json(text)
    if len(words(prose)) >= min_words and distinct_n(prose, 2) < min_distinct_2:
        return "distinct_2"
    if len(prose.encode("utf-8")) >= min_bytes and compression_ratio(prose) < min_compression:
        return "compression"
    if ppl is not None and ppl < min_ppl:  # NaN compares False: no verdict from it
        return "perplexity"
    return ""


def is_degenerate(text: str, ppl: float | None = None, **thresholds: Unpack[Thresholds]) -> bool:
    """Whether `degeneration_reason(text, ppl, **thresholds)` gives a reason; that function
    documents each criterion and threshold.

        is_degenerate(response, ppl)          # ppl from perplexity(...), or None
        is_degenerate(response, min_run=30)   # a threshold changed
    """
    return bool(degeneration_reason(text, ppl, **thresholds))
