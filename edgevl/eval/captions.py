"""Caption accuracy against one or more reference captions: BLEU-4, CIDEr-D and ROUGE-L.

Small re-implementations of the definitions the COCO caption evaluation uses (no Java tokenizer needed): BLEU-4
is corpus-level (Papineni et al. 2002: clipped n-gram precisions summed over the corpus, brevity penalty against
the closest reference length), CIDEr-D follows Vedantam et al. 2015 as coco-caption computes it (tf-idf n-gram
vectors, idf from the references of the whole set, clipped, Gaussian length penalty with sigma 6, times 10), and
ROUGE-L is the LCS F-measure with beta 1.2, best precision and recall over the references.

Text is tokenised the same way for all three: NFKC, case-folded, punctuation removed, words split on spaces and
every CJK character a word of its own. CIDEr's idf needs a set of images: on a single image it is always 0.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from dataclasses import dataclass

from edgevl.eval.metrics import words

MAX_N = 4
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2


@dataclass(frozen=True)
class CaptionScores:
    bleu4: float  # corpus-level, 0-1
    cider: float  # mean of per-caption CIDEr-D, 0-10
    rouge_l: float  # mean of per-caption ROUGE-L, 0-1
    per_caption_cider: tuple[float, ...]
    per_caption_rouge_l: tuple[float, ...]


def score_captions(references: list[list[str]], predictions: list[str]) -> CaptionScores:
    """`references[i]` are the reference captions of image i, `predictions[i]` the model's caption of it."""
    if len(references) != len(predictions):
        raise ValueError("one list of references per prediction")
    refs = [[tokenize(text) for text in group] for group in references]
    hyps = [tokenize(text) for text in predictions]
    ciders = cider_d(refs, hyps)
    rouges = [rouge_l(group, hyp) for group, hyp in zip(refs, hyps)]
    return CaptionScores(bleu4(refs, hyps), _mean(ciders), _mean(rouges), tuple(ciders), tuple(rouges))


def tokenize(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return words("".join(" " if unicodedata.category(char).startswith("P") else char for char in text))


def ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[index:index + n]) for index in range(len(tokens) - n + 1))


def bleu4(references: list[list[list[str]]], hypotheses: list[list[str]]) -> float:
    """Corpus BLEU-4; 0 when some n-gram order has no match at all."""
    matches, totals = [0] * MAX_N, [0] * MAX_N
    hyp_length = ref_length = 0
    for refs, hyp in zip(references, hypotheses):
        hyp_length += len(hyp)
        ref_length += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1] if refs else 0
        for n in range(1, MAX_N + 1):
            counts = ngrams(hyp, n)
            most_in_a_reference: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                most_in_a_reference |= ngrams(ref, n)
            matches[n - 1] += sum(min(count, most_in_a_reference[gram]) for gram, count in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_length == 0 or not all(matches):
        return 0.0
    log_precision = sum(math.log(match / total) for match, total in zip(matches, totals)) / MAX_N
    brevity = 1.0 if hyp_length > ref_length else math.exp(1 - ref_length / hyp_length)
    return brevity * math.exp(log_precision)


def cider_d(references: list[list[list[str]]], hypotheses: list[list[str]]) -> list[float]:
    """CIDEr-D of every hypothesis; document frequencies count images whose references hold the n-gram."""
    document_frequency: Counter = Counter()
    for refs in references:
        document_frequency.update({gram for ref in refs for n in range(1, MAX_N + 1) for gram in ngrams(ref, n)})
    log_images = math.log(max(len(references), 1))

    def vectors(tokens: list[str]) -> list[dict[tuple[str, ...], float]]:
        return [{gram: count * (log_images - math.log(max(1.0, document_frequency[gram])))
                 for gram, count in ngrams(tokens, n).items()} for n in range(1, MAX_N + 1)]

    scores = []
    for refs, hyp in zip(references, hypotheses):
        hyp_vectors = vectors(hyp)
        per_reference = [_cider_similarity(hyp_vectors, vectors(ref), len(hyp) - len(ref)) for ref in refs]
        scores.append(10.0 * sum(per_reference) / len(per_reference) if per_reference else 0.0)
    return scores


def _cider_similarity(hyp: list[dict], ref: list[dict], length_difference: int) -> float:
    """Mean over n of the clipped cosine of the n-gram vectors, with the Gaussian length penalty."""
    penalty = math.exp(-(length_difference ** 2) / (2 * CIDER_SIGMA ** 2))
    total = 0.0
    for hyp_n, ref_n in zip(hyp, ref):
        norms = math.sqrt(sum(v * v for v in hyp_n.values())) * math.sqrt(sum(v * v for v in ref_n.values()))
        if norms:
            total += sum(min(value, ref_n.get(gram, 0.0)) * ref_n.get(gram, 0.0)
                         for gram, value in hyp_n.items()) / norms * penalty
    return total / MAX_N


def rouge_l(references: list[list[str]], hypothesis: list[str]) -> float:
    """LCS-based F-measure, with the best precision and the best recall over the references."""
    if not hypothesis or not references:
        return 0.0
    common = [_lcs_length(ref, hypothesis) for ref in references]
    precision = max(length / len(hypothesis) for length in common)
    recall = max(length / len(ref) for length, ref in zip(common, references) if ref) if any(references) else 0.0
    if not precision or not recall:
        return 0.0
    return (1 + ROUGE_BETA ** 2) * precision * recall / (recall + ROUGE_BETA ** 2 * precision)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _lcs_length(first: list[str], second: list[str]) -> int:
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0]
        for index, other in enumerate(second):
            current.append(previous[index] + 1 if token == other else max(previous[index + 1], current[index]))
        previous = current
    return previous[-1]
