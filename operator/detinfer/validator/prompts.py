"""The fixed prompts of the validation: the probe, the fillers, the long text and the fingerprint set.

These strings are part of what the validator measures. The fingerprint prompts in particular
must never change without a new FINGERPRINT_SCHEME, or every recorded fingerprint would stop
matching.
"""

from __future__ import annotations

PROBE_PROMPT = (
    "Explain, step by step, why adding the same floating-point numbers in a different order "
    "can give a different sum: "
)
"""The prompt whose outputs every batch-size and concurrency suite compares."""

_PARAGRAPHS = (
    "A ledger kept by hand in a harbour office records every ship that enters and leaves. "
    "The clerk writes the name of the vessel, the hour of the tide, the weight of the cargo "
    "and the port it came from. On quiet days the pages fill slowly, one line every hour or "
    "two; on market days the clerk writes without looking up, and the columns of numbers "
    "grow long enough that adding them is a task for the evening, by lamplight, when the "
    "doors are closed and the harbour is dark.",
    "The clerk learned early that the order of the additions matters when the numbers are "
    "rounded. Adding the small weights first and the large ones last gives one total; "
    "adding them as they come gives another that differs in the last figure. Neither total "
    "is wrong by the rules of the office, which round every subtotal to a whole pound, but "
    "the two do not agree, and an inspector who repeats the sum in his own order will find "
    "a third. The clerk therefore writes down the order used, so that anyone can repeat it.",
    "Machines that add numbers face the same choice many millions of times a second. A "
    "processor that splits a long sum across many workers lets each worker add its own "
    "share and then combines the shares; how the sum is split depends on how much work "
    "arrives at once. When little arrives, one worker may add everything in a single pass; "
    "when much arrives, the sum is cut into pieces, and the pieces are combined in a tree. "
    "Each way is correct to within rounding, and each way gives its own last digits.",
    "A language model repeats such sums at every layer for every word it writes. Its answer "
    "to a question is chosen word by word, each time taking the most likely next word. "
    "When two candidate words are almost equally likely, a change in the last digits of a "
    "sum can decide between them, and from that word on the two answers part ways for "
    "good. The question is the same, the model is the same, the settings are the same; "
    "only the number of other questions that happened to arrive in the same instant differs.",
    "The remedy is the one the clerk found: fix the order. Kernels that always split a sum "
    "the same way, whatever the size of the batch, give the same last digits every time. "
    "They cost some speed, because a fixed split cannot always use every worker, and they "
    "must be checked, because a single kernel that still adapts its split to the load is "
    "enough to undo the rest. Checking means asking the same question in many different "
    "company and comparing not only the words of the answers but the numbers behind them.",
    "The inspector's method is simple. Send one question alone, then with one companion, "
    "then with two, three, seven, eight, nine, and so on across the sizes where a machine "
    "might change its way of splitting. Send it beside long questions and short ones. Send "
    "it after a related question whose beginning the machine has remembered, and again "
    "after the memory has been cleared. Send many copies at once from different callers. "
    "Ask several machines of the same kind. If every answer agrees to the last bit, the "
    "machine keeps its ledger in a fixed order; if one answer differs, it does not.",
    "The harbour office kept its ledgers for a hundred years, and historians who add the "
    "old columns today in the clerk's written order arrive at the clerk's totals exactly. "
    "That is the whole of the promise: not that a total is the true sum of the weights, "
    "which no rounded arithmetic can promise, but that anyone who repeats the work in the "
    "recorded way gets the same total, on any day, in any company, as often as they like.",
    "Such a promise is worth most where answers are compared over time. A team that trains "
    "a model by rewarding its own answers needs the answers it scores to be the answers the "
    "model really gave; a team that measures a model before and after a change needs the "
    "difference to come from the change and not from the weather of the server; a team "
    "that chases a strange answer reported by a user needs to see that answer again when "
    "it asks the same question. In each case an answer that cannot be repeated is a fact "
    "that cannot be checked, and a fact that cannot be checked is worth little.",
    "So the inspector writes the result of every visit in a short report: which questions "
    "were asked, in what company, how many different answers came back, and where the "
    "first two that differ part ways. A report with one answer per question is a pass. A "
    "report with two is a finding, and the finding names the word, the position and the "
    "two numbers behind it, so that the engineers who own the machine can find the kernel "
    "that adapted its split, fix it, and ask the inspector to come again.",
)

LONG_TEXT = "\n\n".join(_PARAGRAPHS)
"""About 4,600 characters of prose; the Prefix suite cuts its prompts from it."""

PREFIX_LENGTHS = (1, 511, 2048, 4097)
"""Characters of LONG_TEXT each Prefix prompt keeps: the cut points of SGLang's prefix mode
(python/sglang/test/test_deterministic.py), so that prompts share prefixes of very different
lengths."""

SHORT_FILLER = "Hi."
NUMBERS_FILLER = "List the first two hundred prime numbers, separated by commas, without comments:"
LONG_FILLER = LONG_TEXT[:3000]
FILLERS = (SHORT_FILLER, NUMBERS_FILLER, LONG_FILLER)
"""Prompts of very different lengths that keep the probe company in Mixed and Concurrent."""

FINGERPRINT_SCHEME = "detinfer-fingerprint-v1"
FINGERPRINT_MAX_NEW_TOKENS = 32
FINGERPRINT_SEED = 42
FINGERPRINT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 5, 8, 13,",
    "Once upon a time, in a small village by the sea,",
)
"""Greedy outputs of these prompts, as token ids, make the fingerprint."""

RADIX_PROMPT_TOKENS = 64
RADIX_TOKEN_RANGE = (1, 255)
"""Token ids of the random RadixCache prompts: low ids exist in every vocabulary."""
RADIX_NEW_TOKENS = 4
"""Tokens generated after each cached and uncached prefill."""
RADIX_PROMPT_LOGPROBS = 8
"""Prompt positions whose logprobs RadixCache compares (the last ones: a server recomputes the
positions it returns logprobs for, so earlier ones would keep the cache from being used)."""

SAMPLING_TEMPERATURE = 0.8
SAMPLING_TOP_P = 0.9
"""The Sampling suite's parameters: sampling as RL rollouts do it, through SGLang's top-p path
(top_k_top_p_min_p_sampling_from_probs_torch in python/sglang/srt/layers/sampler.py)."""
SGLANG_DEFAULT_SAMPLING_SEED = 42
"""What SGLang samples with in deterministic mode when a request sends no sampling_seed
(python/sglang/srt/sampling/sampling_batch_info.py)."""


def prompt_name(prompt: str | tuple[int, ...]) -> str:
    """A short name for a prompt in a first-divergence message."""
    if isinstance(prompt, tuple):
        return f"{len(prompt)} token ids"
    if prompt == PROBE_PROMPT:
        return "the probe prompt"
    if prompt == SHORT_FILLER:
        return "the short filler"
    if prompt == NUMBERS_FILLER:
        return "the numbers filler"
    if prompt == LONG_FILLER:
        return "the long filler"
    if prompt in FINGERPRINT_PROMPTS:
        return f"fingerprint prompt {FINGERPRINT_PROMPTS.index(prompt) + 1}"
    if LONG_TEXT.startswith(prompt):
        return f"the long text's first {len(prompt)} characters"
    # The Prefix suite's prompts: "[<the run's nonce>] " and then the long text.
    if prompt.startswith("[") and "] " in prompt:
        nonce, rest = prompt[1:].split("] ", 1)
        if nonce.isalnum() and rest and LONG_TEXT.startswith(rest):
            return f"the run's nonce and the long text's first {len(rest)} characters"
    return f"a {len(prompt)}-character prompt"
