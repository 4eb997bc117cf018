"""Character error rate, as the test set defines it: NFKC, whitespace collapsed, Levenshtein / length."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def cer(hypothesis: str, reference: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    return levenshtein(hyp, ref) / max(len(ref), 1)
