"""Scoring saved predictions and writing the report: `report.md`, `report.html`, `charts/*.png`, `samples/*.png`.

Scores are computed from the prediction files every time, so a report can be rebuilt with another
normalisation without running any model. Each task has one headline quality, higher is better, used for the
charts and to pick the worst samples: character accuracy (1 - CER, at least 0) for OCR, TEDS for tables,
CIDEr-D for captions, the share of exactly right fields for extraction. A sample that failed (unreadable image,
engine error) counts as an empty answer; a task the engine cannot do (captions on the embedded engine) is
reported as not supported, not as a zero.
"""

from __future__ import annotations

import datetime
import html
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from PIL import Image

from edgevl.eval.captions import score_captions
from edgevl.eval.datasets import Sample
from edgevl.eval.fields import FieldScore, by_field, score_fields
from edgevl.eval.metrics import Normalization, TextScore, TextTotals, score_text
from edgevl.eval.runner import PredictionLog, read_info
from edgevl.eval.teds import score_table
from edgevl.images import load_image

TASK_TITLES = {"ocr": "OCR", "table": "Tables", "caption": "Captions", "extract": "Extraction"}
#: The best possible quality of a sample, for tasks that have one: such samples are never shown as "worst".
PERFECT_QUALITY = {"ocr": 1.0, "table": 1.0, "extract": 1.0}
QUALITY_NAMES = {"ocr": "character accuracy (1 - CER)", "table": "TEDS", "caption": "CIDEr-D",
                 "extract": "fields exactly right"}
THUMBNAIL_SIZE = (900, 600)


@dataclass
class SampleResult:
    sample: Sample
    record: dict[str, Any]
    quality: float  # higher is better
    detail: str  # how the score reads for a person ("CER 12.0% (S 1, D 0, I 2)")


@dataclass
class TaskResult:
    task: str
    metrics: dict[str, float]  # display name -> value, in display order
    quality: float
    samples: list[SampleResult]
    by_tag: dict[str, float]  # tag -> the task's main metric over the samples with that tag
    seconds_per_image: float
    tokens_per_second: float | None  # None for engines without tokens (the embedded engine)
    errors: list[SampleResult] = field(default_factory=list)


@dataclass
class ModelResult:
    label: str
    info: dict[str, Any]
    tasks: dict[str, TaskResult]
    unsupported: list[str]  # tasks the engine cannot do
    peak_rss: int


# ---------------------------------------------------------------------------------------------------- scoring


def score_run(samples: Sequence[Sample], out: Path, labels: Sequence[str],
              normalization: Normalization = Normalization()) -> list[ModelResult]:
    return [score_model(samples, out, label, normalization) for label in labels]


def score_model(samples: Sequence[Sample], out: Path, label: str, normalization: Normalization) -> ModelResult:
    log = PredictionLog(out / "predictions" / f"{label}.jsonl")
    records = {record["id"]: record for record in log.records()}
    info = read_info(log.info_path)
    by_task: dict[str, list[tuple[Sample, dict]]] = defaultdict(list)
    unsupported = set()
    for sample in samples:
        record = records.get(sample.id)
        if record is None:
            continue
        if record["status"] == "unsupported":
            unsupported.add(sample.task)
        else:
            by_task[sample.task].append((sample, record))
    tokens = info.get("family") != "classic"
    tasks = {task: SCORERS[task](pairs, normalization, tokens) for task, pairs in by_task.items()}
    peak = max((record.get("peak_rss", 0) for record in records.values()), default=0)
    return ModelResult(label, info, tasks, sorted(unsupported), peak)


def _score_ocr(pairs: list[tuple[Sample, dict]], normalization: Normalization, tokens: bool) -> TaskResult:
    scores = [score_text(sample.reference, record.get("prediction", ""), normalization) for sample, record in pairs]
    totals = TextTotals.of(scores)
    results = [SampleResult(sample, record, max(0.0, 1 - score.cer), _ocr_detail(score))
               for (sample, record), score in zip(pairs, scores)]
    by_tag = _group_by_tag(pairs, scores, lambda group: TextTotals.of(group).cer)
    metrics = {"CER": totals.cer, "S": totals.substitutions, "D": totals.deletions, "I": totals.insertions,
               "WER": totals.wer, "NED": totals.ned, "exact": totals.exact_match}
    return _task_result("ocr", metrics, max(0.0, 1 - totals.cer), results, by_tag, tokens)


def _score_table(pairs: list[tuple[Sample, dict]], normalization: Normalization, tokens: bool) -> TaskResult:
    scores = [score_table(sample.reference, record.get("prediction", ""), normalization) for sample, record in pairs]
    results = [SampleResult(sample, record, score.teds, f"TEDS {score.teds:.3f}, structure {score.teds_structure:.3f}")
               for (sample, record), score in zip(pairs, scores)]
    by_tag = _group_by_tag(pairs, [score.teds for score in scores], _mean)
    metrics = {"TEDS": _mean([score.teds for score in scores]),
               "TEDS-struct": _mean([score.teds_structure for score in scores])}
    return _task_result("table", metrics, metrics["TEDS"], results, by_tag, tokens)


def _score_caption(pairs: list[tuple[Sample, dict]], normalization: Normalization, tokens: bool) -> TaskResult:
    scores = score_captions([list(sample.references) for sample, _ in pairs],
                            [record.get("prediction", "") for _, record in pairs])
    results = [SampleResult(sample, record, cider, f"CIDEr-D {cider:.2f}, ROUGE-L {rouge:.3f}")
               for (sample, record), cider, rouge in zip(pairs, scores.per_caption_cider, scores.per_caption_rouge_l)]
    by_tag = _group_by_tag(pairs, list(scores.per_caption_cider), _mean)
    metrics = {"BLEU-4": scores.bleu4, "CIDEr-D": scores.cider, "ROUGE-L": scores.rouge_l}
    return _task_result("caption", metrics, scores.cider, results, by_tag, tokens)


def _score_extract(pairs: list[tuple[Sample, dict]], normalization: Normalization, tokens: bool) -> TaskResult:
    """Per field: exact match and NED; per sample: the share of exact fields. Field exact and NED are micro
    averages over all fields; "all fields" counts the documents with every field right."""
    scores = [score_fields(sample.expected, record.get("prediction", ""), normalization) for sample, record in pairs]
    exact = [_mean([float(field.exact) for field in fields]) for fields in scores]
    results = [SampleResult(sample, record, quality, _extract_detail(fields))
               for (sample, record), quality, fields in zip(pairs, exact, scores)]
    every_field = [field for fields in scores for field in fields]
    metrics = {"field exact": _mean([float(field.exact) for field in every_field]),
               "field NED": _mean([field.ned for field in every_field]),
               "all fields": _mean([float(quality == 1.0) for quality in exact])}
    metrics.update({f"{name} exact": rate for name, (rate, _) in by_field(scores).items()})
    return _task_result("extract", metrics, metrics["field exact"], results, _group_by_tag(pairs, exact, _mean),
                        tokens)


def _extract_detail(fields: list[FieldScore]) -> str:
    wrong = [f"{field.path}: {field.predicted!r} (expected {field.expected!r})" for field in fields if not field.exact]
    return f"{len(fields) - len(wrong)}/{len(fields)} fields right" + ("; " + "; ".join(wrong[:4]) if wrong else "")


SCORERS: dict[str, Callable[[list[tuple[Sample, dict]], Normalization, bool], TaskResult]] = {
    "ocr": _score_ocr, "table": _score_table, "caption": _score_caption, "extract": _score_extract,
}


def _task_result(task: str, metrics: dict[str, float], quality: float, results: list[SampleResult],
                 by_tag: dict[str, float], tokens: bool) -> TaskResult:
    records = [result.record for result in results]
    finished = [record for record in records if record["status"] == "ok"]
    decode_ms = sum(record.get("decode_ms", 0) for record in finished)
    generated = sum(record.get("generated_tokens", 0) for record in finished)
    return TaskResult(
        task, metrics, quality, results, by_tag,
        seconds_per_image=_mean([record["seconds"] for record in finished]),
        tokens_per_second=1000 * generated / decode_ms if tokens and decode_ms else None,
        errors=[result for result in results if result.record["status"] == "error"],
    )


def _group_by_tag(pairs: list[tuple[Sample, dict]], scores: list, combine: Callable[[list], float]) -> dict[str, float]:
    groups: dict[str, list] = defaultdict(list)
    for (sample, _), score in zip(pairs, scores):
        for tag in sample.tags:
            groups[tag].append(score)
    return {tag: combine(group) for tag, group in sorted(groups.items())}


def _ocr_detail(score: TextScore) -> str:
    return f"CER {score.cer:.1%} (S {score.substitutions}, D {score.deletions}, I {score.insertions})"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------------------------------------------- summary


PERCENT_METRICS = {"CER", "WER", "exact", "field exact", "all fields"}
COUNT_METRICS = {"S", "D", "I"}


def summary_tables(results: Sequence[ModelResult]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """task -> (header, rows): one row per model, the task's metrics, speed and memory."""
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    for task in TASK_TITLES:
        scored = [(result, result.tasks[task]) for result in results if task in result.tasks]
        if not scored:
            continue
        metric_names = list(scored[0][1].metrics)
        header = ["model", "quant", "size MB", "n", *metric_names, "s/image", "tok/s", "peak RSS MB", "errors"]
        rows = [[result.label, str(result.info.get("quant", "?")), _megabytes(result.info.get("size_bytes")),
                 str(len(scores.samples)), *(format_metric(name, scores.metrics[name]) for name in metric_names),
                 f"{scores.seconds_per_image:.2f}",
                 f"{scores.tokens_per_second:.1f}" if scores.tokens_per_second is not None else "-",
                 _megabytes(result.peak_rss), str(len(scores.errors))]
                for result, scores in scored]
        tables[task] = (header, rows)
    return tables


def format_metric(name: str, value: float) -> str:
    if name in PERCENT_METRICS or name.endswith(" exact"):
        return f"{value:.2%}"
    if name in COUNT_METRICS:
        return str(int(value))
    return f"{value:.3f}"


def _megabytes(value: int | None) -> str:
    return f"{value / 1e6:,.0f}" if value else "-"


# ----------------------------------------------------------------------------------------------------- report


def write_report(samples: Sequence[Sample], dataset: Path, out: Path, labels: Sequence[str],
                 normalization: Normalization = Normalization(), worst: int = 5) -> list[ModelResult]:
    """Score the predictions in `out` and write report.md, report.html and their pictures; returns the scores."""
    results = score_run(samples, out, labels, normalization)
    index = {sample.id: position for position, sample in enumerate(samples)}
    blocks = [
        ("h1", "edgevl eval report"),
        ("p", _dataset_line(samples, dataset, normalization)),
        *_summary_blocks(results),
        *_chart_blocks(results, out),
        *_tag_blocks(results),
        *_model_blocks(results),
        *_worst_blocks(results, out, index, worst),
        *_error_blocks(results),
    ]
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks), encoding="utf-8")
    return results


def _dataset_line(samples: Sequence[Sample], dataset: Path, normalization: Normalization) -> str:
    counts: defaultdict[str, int] = defaultdict(int)
    for sample in samples:
        counts[sample.task] += 1
    tasks = ", ".join(f"{TASK_TITLES[task]} {count}" for task, count in counts.items())
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"Dataset {dataset} ({len(samples)} samples: {tasks}). Text normalised: {normalization.describe()}. {when}."


def _summary_blocks(results: Sequence[ModelResult]) -> list[tuple]:
    blocks: list[tuple] = [("h2", "Summary")]
    for task, (header, rows) in summary_tables(results).items():
        blocks += [("h3", TASK_TITLES[task]), ("table", header, rows)]
    for result in results:
        if result.unsupported:
            blocks.append(("p", f"{result.label} cannot do: {', '.join(result.unsupported)} (not scored)."))
    blocks.append(("p", "CER and WER: errors over all reference characters/words (S substitutions, D deletions, "
                        "I insertions); NED: mean normalised edit distance; exact: share of samples read exactly. "
                        "s/image: whole request, image loading to parsed answer; tok/s: generation speed."))
    return blocks


def _chart_blocks(results: Sequence[ModelResult], out: Path) -> list[tuple]:
    from edgevl.eval.charts import quality_chart

    blocks: list[tuple] = []
    for task in TASK_TITLES:
        points = [(result.label, result.info.get("size_bytes") or 0, result.tasks[task].seconds_per_image,
                   result.tasks[task].quality) for result in results if task in result.tasks]
        if points:
            path = quality_chart(out / "charts" / f"{task}.png", TASK_TITLES[task], QUALITY_NAMES[task], points,
                                 best=PERFECT_QUALITY.get(task))
            blocks.append(("img", path.relative_to(out).as_posix(), f"{TASK_TITLES[task]}: quality vs size and speed"))
    return [("h2", "Accuracy, size and speed"), *blocks] if blocks else []


def _tag_blocks(results: Sequence[ModelResult]) -> list[tuple]:
    blocks: list[tuple] = []
    for task in TASK_TITLES:
        scored = [result for result in results if task in result.tasks]
        tags = sorted({tag for result in scored for tag in result.tasks[task].by_tag})
        if not tags:
            continue
        metric = next(iter(scored[0].tasks[task].metrics))
        rows = [[tag, *(format_metric(metric, result.tasks[task].by_tag[tag]) if tag in result.tasks[task].by_tag
                        else "-" for result in scored)] for tag in tags]
        blocks += [("h3", f"{TASK_TITLES[task]}: {metric} by tag"),
                   ("table", ["tag", *(r.label for r in scored)], rows)]
    return [("h2", "By tag"), *blocks] if blocks else []


def _model_blocks(results: Sequence[ModelResult]) -> list[tuple]:
    rows = [[result.label, str(result.info.get("model", "")), str(result.info.get("description", "")),
             f"{result.info.get('load_seconds', 0):.1f}"] for result in results]
    return [("h2", "Models"), ("table", ["label", "model", "engine", "load s"], rows)]


def _worst_blocks(results: Sequence[ModelResult], out: Path, index: dict[str, int], worst: int) -> list[tuple]:
    blocks: list[tuple] = []
    for result in results:
        for task, scores in result.tasks.items():
            imperfect = [item for item in scores.samples if item.quality < PERFECT_QUALITY.get(task, float("inf"))]
            ranked = sorted(imperfect, key=lambda item: (item.quality, item.sample.id))[:worst]
            blocks.append(("h3", f"{result.label}: {TASK_TITLES[task]}, {len(ranked)} worst"))
            if not ranked:
                blocks.append(("p", "Every sample is right."))
            for item in ranked:
                picture = _thumbnail(item.sample, out / "samples" / f"{index[item.sample.id]:06d}.png")
                blocks += [("p", f"{item.sample.id}: {item.detail}"),
                           ("img", picture.relative_to(out).as_posix(), item.sample.id),
                           ("pre", "reference:\n" + "\n---\n".join(item.sample.references)),
                           ("pre", "prediction:\n" + (item.record.get("prediction") or item.record.get("error", "")))]
    return [("h2", "Worst samples"), *blocks] if blocks else []


def _error_blocks(results: Sequence[ModelResult]) -> list[tuple]:
    rows = [[result.label, item.sample.id, item.record.get("error", "")]
            for result in results for scores in result.tasks.values() for item in scores.errors]
    return [("h2", "Errors"), ("table", ["model", "sample", "error"], rows)] if rows else []


def _thumbnail(sample: Sample, path: Path) -> Path:
    """A copy of the sample's image, shrunk to fit THUMBNAIL_SIZE, made once for all models."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            image = load_image(sample.image)
        except Exception:  # noqa: BLE001 - an unreadable image is shown as a grey box; its error is listed
            image = Image.new("RGB", (64, 64), "grey")
        image.thumbnail(THUMBNAIL_SIZE)
        image.save(path)
    return path


# ---------------------------------------------------------------------------------------------- rendering


def to_markdown(blocks: list[tuple]) -> str:
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + content[0])
        elif kind == "p":
            parts.append(content[0])
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0]})")
        elif kind == "pre":
            fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", content[0])), default=0))
            parts.append(f"{fence}\n{content[0]}\n{fence}")
        elif kind == "table":
            header, rows = content
            lines = [_markdown_row(header), "|" + "---|" * len(header), *(_markdown_row(row) for row in rows)]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", "<br>") for cell in cells) + " |"


def to_html(blocks: list[tuple]) -> str:
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "img":
            parts.append(f'<img src="{html.escape(content[0])}" alt="{html.escape(content[1])}">')
        elif kind == "pre":
            parts.append(f"<pre>{html.escape(content[0])}</pre>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in row) + "</tr>"
                           for row in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return HTML_PAGE.format(body="\n".join(parts))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgevl eval report</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f0f0f0; }}
pre {{ background: #f6f6f6; padding: 8px; white-space: pre-wrap; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head>
<body>
{body}
</body></html>
"""
