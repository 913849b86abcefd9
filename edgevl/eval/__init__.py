"""`edgevl eval`: measure OCR, table and caption quality per model, format and quant.

    synth.py     labelled synthetic images (text lines, paragraphs, UI screenshots, tables) from corpus/
    datasets.py  reading labelled folders (JSONL manifest, .gt.txt side files, ICDAR box files)
    metrics.py   CER with S/D/I counts, WER, normalised edit distance, exact match; text normalisation
    teds.py      TEDS and structure-only TEDS for tables
    captions.py  BLEU-4, CIDEr-D and ROUGE-L for captions
    runner.py    runs models over a dataset, resumably, saving every prediction
    report.py    scores the predictions and writes the Markdown + HTML report with charts

Running and scoring are separate: predictions are saved as they come, and the report is computed from them, so
a killed run resumes where it stopped and changing a normalisation option needs no new run.
"""
