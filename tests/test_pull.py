"""`edgevl pull` against a stand-in hub on loopback (edgevl.testing.hub): GGUF repos imported, checkpoint repos
converted, resumed downloads, and one clear line for every way it can fail."""

from __future__ import annotations

import contextlib
import importlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")
gguf = pytest.importorskip("gguf")

from huggingface_hub import constants  # noqa: E402
from test_gguf_import import write_mmproj_gguf, write_text_gguf  # noqa: E402

from edgevl import hub as hub_module  # noqa: E402
from edgevl.cli import main  # noqa: E402
from edgevl.errors import EdgevlError  # noqa: E402
from edgevl.hub import pull, resolve  # noqa: E402
from edgevl.model_files import check_model_files  # noqa: E402
from edgevl.testing.hub import stand_in_hub  # noqa: E402

GGUF_REPO = "tiny/Tiny-VL-GGUF"
TEXT, OTHER_TEXT, MMPROJ = "Tiny-VL-Q4_K_M.gguf", "Tiny-VL-Q8_0.gguf", "mmproj-Tiny-VL-f16.gguf"


@pytest.fixture
def serve(monkeypatch, tmp_path):
    """Start a stand-in hub and point huggingface_hub at it (HF_ENDPOINT, an empty HF_HOME, no token)."""
    stack = contextlib.ExitStack()

    def start(repos: dict[str, Path], **options):
        hub = stack.enter_context(stand_in_hub(repos, **options))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        importlib.reload(constants)  # huggingface_hub reads its environment when imported
        return hub

    yield start
    stack.close()
    monkeypatch.undo()
    importlib.reload(constants)


@pytest.fixture
def gguf_repo(tmp_path) -> Path:
    folder = tmp_path / "repo-gguf"
    folder.mkdir()
    write_text_gguf(folder / TEXT)
    write_text_gguf(folder / OTHER_TEXT, file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    write_mmproj_gguf(folder / MMPROJ)
    (folder / "README.md").write_text("# Tiny-VL GGUF\n")
    return folder


def resolve_gets(hub, name: str) -> list[str | None]:
    """The Range headers of the hub's GETs of one file."""
    return [byte_range for method, path, byte_range in hub.requests if method == "GET" and path.endswith("/" + name)]


def test_gguf_repo_is_imported(serve, gguf_repo, tmp_path):
    hub = serve({GGUF_REPO: gguf_repo})
    folder, manifest = pull(GGUF_REPO, tmp_path / "model", quant="q4_k_m")
    assert (manifest.family, manifest.quant, manifest.vision_quant) == ("qwen2vl", "q4_k_m", "f16")
    check_model_files(folder, manifest, verify=True)
    assert (folder / manifest.files["text"].name).read_bytes() == (gguf_repo / TEXT).read_bytes()
    assert resolve_gets(hub, OTHER_TEXT) == [] and resolve_gets(hub, "README.md") == []  # only what is needed


def test_interrupted_download_is_resumed(serve, gguf_repo, tmp_path, monkeypatch):
    """The connection drops after 100 bytes; the download goes on from what arrived (a Range request)."""
    hub = serve({GGUF_REPO: gguf_repo}, cut_after={TEXT: [100]})
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64)  # small files: chunks smaller than the cut
    folder, manifest = pull(GGUF_REPO, tmp_path / "model", file=TEXT)
    assert (folder / manifest.files["text"].name).read_bytes() == (gguf_repo / TEXT).read_bytes()
    first, resumed = resolve_gets(hub, TEXT)
    assert first is None and resumed in ("bytes=64-", "bytes=100-")


def test_download_cut_for_good_is_one_line(serve, gguf_repo, tmp_path, monkeypatch, capsys):
    """20 bytes, then nothing on each of huggingface_hub's retries: one error line under the progress bar where it
    stopped, no model folder."""
    from huggingface_hub import file_download

    serve({GGUF_REPO: gguf_repo}, cut_after={TEXT: [20] + [0] * 6})
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 10)
    monkeypatch.setattr(file_download.time, "sleep", lambda seconds: None)  # its pause between retries
    assert main(["pull", GGUF_REPO, "--file", TEXT, "-o", str(tmp_path / "model")]) == 1
    error = capsys.readouterr().err
    assert "cannot reach the hub at http://127.0.0.1:" in error and "RemoteProtocolError" in error
    bar, message = error.strip().splitlines()
    assert f"downloading {TEXT}" in bar and "20/480" in bar and message.startswith("edgevl: error: ")
    assert not (tmp_path / "model").exists()


def partial_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "hf-home").rglob("*.incomplete"))


def test_pull_cut_off_continues_in_the_next_pull(serve, gguf_repo, tmp_path, monkeypatch):
    """A pull that gave up (the connection dropped for good after 100 bytes) leaves them in the cache; the next
    pull asks only for the rest."""
    from huggingface_hub import file_download

    hub = serve({GGUF_REPO: gguf_repo}, cut_after={TEXT: [100] + [0] * 5})  # hf tries 6 times
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 10)
    monkeypatch.setattr(file_download.time, "sleep", lambda seconds: None)
    with pytest.raises(EdgevlError, match="cannot reach the hub"):
        pull(GGUF_REPO, tmp_path / "model", file=TEXT)
    [partial] = partial_files(tmp_path)
    assert partial.stat().st_size == 100
    hub.requests.clear()
    folder, manifest = pull(GGUF_REPO, tmp_path / "model", file=TEXT)
    assert (folder / manifest.files["text"].name).read_bytes() == (gguf_repo / TEXT).read_bytes()
    assert resolve_gets(hub, TEXT) == ["bytes=100-"] and partial_files(tmp_path) == []


def test_killed_pull_continues_in_the_next_pull(serve, gguf_repo, tmp_path):
    """`edgevl pull` in a process of its own, killed (SIGKILL: no clean-up runs) while the hub stalls after 150
    bytes of the file; the next pull asks only for the rest."""
    hub = serve({GGUF_REPO: gguf_repo}, hold_after={TEXT: 150})
    script = ("import sys; from huggingface_hub import constants; constants.DOWNLOAD_CHUNK_SIZE = 50; "
              "from edgevl.cli import main; main(sys.argv[1:])")
    process = subprocess.Popen([sys.executable, "-c", script, "pull", GGUF_REPO, "--file", TEXT, "-o",
                                str(tmp_path / "model")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sum(path.stat().st_size for path in partial_files(tmp_path)) < 150:
            assert process.poll() is None and time.monotonic() < deadline, "the pull did not reach the stall"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    hub.requests.clear()
    folder, manifest = pull(GGUF_REPO, tmp_path / "model", file=TEXT)
    assert resolve_gets(hub, TEXT) == ["bytes=150-"]
    assert (folder / manifest.files["text"].name).read_bytes() == (gguf_repo / TEXT).read_bytes()


class StopAfter:
    """A converters.Progress that stops the pull (as the GUI's Cancel does) once `limit` bytes arrived."""

    def __init__(self, limit: int) -> None:
        self.limit, self.done, self.steps = limit, 0, []

    def step(self, description: str, total: int | None) -> None:
        self.steps.append((description, total))

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self.done >= self.limit:
            raise KeyboardInterrupt


def test_cancelled_pull_continues_where_it_stopped(serve, gguf_repo, tmp_path, monkeypatch):
    hub = serve({GGUF_REPO: gguf_repo})
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64)
    size = (gguf_repo / TEXT).stat().st_size
    with pytest.raises(KeyboardInterrupt):
        pull(GGUF_REPO, tmp_path / "model", file=TEXT, progress=StopAfter(128))
    hub.requests.clear()
    progress = StopAfter(10**9)
    folder, _ = pull(GGUF_REPO, tmp_path / "model", file=TEXT, progress=progress)
    assert resolve_gets(hub, TEXT) == ["bytes=128-"]
    assert progress.steps[0] == (f"downloading {TEXT} ({size / 1e6:.1f} MB)", size)
    assert progress.done >= size  # the 128 bytes from before count as done
    assert not (tmp_path / "model").exists() or folder == tmp_path / "model"


def test_finished_pull_is_not_made_again(serve, gguf_repo, tmp_path):
    hub = serve({GGUF_REPO: gguf_repo})
    folder, manifest = pull(GGUF_REPO, tmp_path / "model", quant="q4_k_m")
    hub.requests.clear()
    assert pull(GGUF_REPO, tmp_path / "model", quant="q4_k_m") == (folder, manifest)
    assert [method for method, _, _ in hub.requests] == ["GET"]  # the model info only
    with pytest.raises(EdgevlError, match="already exists"):  # another quant: refused before downloading
        pull(GGUF_REPO, tmp_path / "model", quant="q8_0")
    assert resolve_gets(hub, OTHER_TEXT) == []


def test_finished_pull_is_found_in_the_models_folder(serve, gguf_repo, tmp_path, monkeypatch):
    """Without -o, the imported model's folder is named after the files' metadata: found among the models."""
    hub = serve({GGUF_REPO: gguf_repo})
    monkeypatch.setenv("EDGEVL_MODELS", str(tmp_path / "models"))
    folder, manifest = pull(GGUF_REPO, quant="q4_k_m")
    hub.requests.clear()
    assert pull(GGUF_REPO, quant="q4_k_m") == (folder, manifest)
    assert [method for method, _, _ in hub.requests] == ["GET"]
    assert pull(GGUF_REPO, quant="q8_0")[0] != folder  # another file: another model


def test_second_pull_downloads_nothing(serve, gguf_repo, tmp_path):
    hub = serve({GGUF_REPO: gguf_repo})
    pull(GGUF_REPO, tmp_path / "first", quant="q4_k_m")
    hub.requests.clear()
    pull(GGUF_REPO, tmp_path / "second", quant="q4_k_m")
    assert resolve_gets(hub, TEXT) == [] and resolve_gets(hub, MMPROJ) == []


def test_cli_pull_says_where_the_model_is(serve, gguf_repo, tmp_path, capsys, monkeypatch):
    serve({GGUF_REPO: gguf_repo})
    monkeypatch.setenv("EDGEVL_MODELS", str(tmp_path / "models"))
    assert main(["pull", GGUF_REPO, "--quant", "Q8_0"]) == 0
    assert f"done: {tmp_path / 'models' / 'tiny-q8_0'}" in capsys.readouterr().err


def checkpoint_repo(tmp_path: Path, architecture: str) -> Path:
    """A repo that looks like a checkpoint up to its config.json (the weights are never fetched in these tests)."""
    folder = tmp_path / f"repo-{architecture}"
    folder.mkdir()
    (folder / "config.json").write_text(f'{{"architectures": ["{architecture}"]}}')
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder


@pytest.mark.parametrize("case, message", [
    ("unknown repo", "no repo nobody/nothing at http://127.0.0.1:"),
    ("bad token", "refused access to tiny/Tiny-VL-GGUF (401): check HF_TOKEN"),
    ("unsupported architecture", "architecture 'LlamaForCausalLM' is not supported"),
    ("quant not there", "no language model files with quant q5_k_m"),
    ("onnx from gguf", "holds GGUF files; pull it without --to onnx"),
    ("full disk", "not enough disk space for tiny/Tiny-VL-GGUF: it needs"),
    ("full disk, checkpoint", "not enough disk space for qwen/tiny: it needs"),
    ("not a name", "neither a model in the catalogue"),
])
@pytest.mark.filterwarnings("ignore:Not enough free disk space")  # huggingface_hub's, for config.json
def test_failures_are_one_clear_line(case, message, serve, gguf_repo, tmp_path, monkeypatch, capsys):
    hub = serve({GGUF_REPO: gguf_repo, "meta/llama": checkpoint_repo(tmp_path, "LlamaForCausalLM"),
                 "qwen/tiny": checkpoint_repo(tmp_path, "Qwen2VLForConditionalGeneration")},
                token="good" if case == "bad token" else None)
    arguments = {
        "unknown repo": ["nobody/nothing"],
        "bad token": [GGUF_REPO],
        "unsupported architecture": ["meta/llama"],
        "quant not there": [GGUF_REPO, "--quant", "q5_k_m"],
        "onnx from gguf": [GGUF_REPO, "--to", "onnx"],
        "full disk": [GGUF_REPO, "--quant", "q4_k_m"],
        "full disk, checkpoint": ["qwen/tiny"],
        "not a name": ["qwen-the-best"],
    }[case]
    if case == "bad token":
        monkeypatch.setenv("HF_TOKEN", "bad")
    if case.startswith("full disk"):
        monkeypatch.setattr(hub_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10))
    assert main(["pull", *arguments, "-o", str(tmp_path / "model")]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "model").exists()
    assert resolve_gets(hub, "model.safetensors") == [] and resolve_gets(hub, TEXT) == []  # refused before


@pytest.mark.filterwarnings("ignore:Not enough free disk space")  # huggingface_hub's, for config.json
def test_the_check_before_downloading_counts_the_conversion_scratch(serve, tmp_path, monkeypatch, capsys):
    """Room for the download and the model, not for the scratch beside them (ONNX stages the weights once more):
    refused before downloading, not after (convert's own check counts it exactly, once the checkpoint is here)."""
    hub = serve({"qwen/tiny": checkpoint_repo(tmp_path, "Qwen2VLForConditionalGeneration")})
    # 64 bytes of weights: downloaded, converted (about as much) and staged (as much again) need 3 x 64 + 5 %
    monkeypatch.setattr(hub_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 150))
    assert main(["pull", "qwen/tiny", "--to", "onnx", "-o", str(tmp_path / "model")]) == 1
    assert "not enough disk space for qwen/tiny: it needs 0.00 GB" in capsys.readouterr().err
    assert resolve_gets(hub, "model.safetensors") == []
def test_unreachable_hub(serve, gguf_repo, tmp_path, capsys, monkeypatch):
    hub = serve({GGUF_REPO: gguf_repo})
    monkeypatch.setenv("HF_ENDPOINT", hub.url.rsplit(":", 1)[0] + ":9")  # the discard port: nothing listens
    importlib.reload(constants)
    assert main(["pull", GGUF_REPO]) == 1
    assert "cannot reach the hub at http://127.0.0.1:9" in capsys.readouterr().err


def test_offline_is_one_line(serve, gguf_repo, capsys, monkeypatch):
    serve({GGUF_REPO: gguf_repo})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    importlib.reload(constants)
    assert main(["pull", GGUF_REPO]) == 1
    error = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in error and len(error.strip().splitlines()) == 1


def test_names_are_model_cards_or_repos(capsys):
    assert resolve("qwen2-vl-2b-instruct").repo == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve("Qwen/Qwen2-VL-7B-Instruct").card.id == "qwen2-vl-7b-instruct"
    assert resolve("someone/finetune").card is None
    assert main(["models", "--available"]) == 0
    out = capsys.readouterr().out
    assert "qwen2-vl-2b-instruct" in out and "RAM" in out and "~ estimated from the file sizes" in out
    row = next(line for line in out.splitlines() if line.startswith(" qwen2-vl-2b-instruct"))
    assert row.split()[1:8] == ["4.4", "GB", "2.3", "GB", "3.7", "GB", "794"]  # measured


def test_pull_warns_when_the_model_needs_more_memory(serve, gguf_repo, tmp_path, monkeypatch, caplog):
    serve({"Qwen/Qwen2-VL-2B-Instruct": gguf_repo})
    monkeypatch.setattr(hub_module.psutil, "virtual_memory", lambda: type("Memory", (), {"total": 2 * 10**9}))
    pull("qwen2-vl-2b-instruct", tmp_path / "model", quant="q4_k_m")
    assert "Qwen2-VL-2B-Instruct at q4_k_m needs about 3.7 GB of memory to run; this computer has 2.0 GB" \
        in caplog.text


def assert_answers_alike(model: Path, reference: Path) -> None:
    """Same greedy answer and the same next-token logits, for a prompt with two images."""
    from parity import images_for, ocr_request

    from edgevl.api import open_engine

    request = ocr_request(images_for("two-images"))
    answers, logits = [], []
    for folder in (model, reference):
        with open_engine(folder, threads=1) as engine:
            logits.append(engine.first_token_logits(request))
            answers.append("".join(engine.stream(request)))
    assert answers[0] == answers[1]
    assert np.array_equal(logits[0], logits[1])


@pytest.mark.slow
def test_pulled_checkpoint_answers_like_convert(serve, qwen2vl_checkpoint, qwen2vl_gguf, tmp_path):
    hub = serve({"tiny/Qwen2-VL-tiny": qwen2vl_checkpoint})
    folder, manifest = pull("tiny/Qwen2-VL-tiny", tmp_path / "pulled", quant="f32", vision_quant="f32")
    assert (manifest.format, manifest.quant) == ("gguf", "f32")
    assert_answers_alike(folder, qwen2vl_gguf("f32"))
    served = {path.name for path in hub.files("tiny/Qwen2-VL-tiny")}
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path}
    assert fetched == served  # a checkpoint's files are all needed
    hub.requests.clear()
    assert pull("tiny/Qwen2-VL-tiny", tmp_path / "pulled", quant="f32") == (folder, manifest)  # not made again
    assert [method for method, _, _ in hub.requests] == ["GET"]  # the model info only


@pytest.mark.slow
def test_pulled_llama_cpp_gguf_repo_answers_like_convert(serve, llama_cpp_files, qwen2vl_gguf, tmp_path):
    """A GGUF repo as llama.cpp users publish them (files from llama.cpp's own converter)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for path in llama_cpp_files:
        shutil.copyfile(path, repo / path.name)
    serve({"tiny/Qwen2-VL-tiny-GGUF": repo})
    folder, manifest = pull("tiny/Qwen2-VL-tiny-GGUF", tmp_path / "pulled")
    assert (manifest.family, manifest.quant, manifest.vision_quant) == ("qwen2vl", "f32", "f32")
    assert_answers_alike(folder, qwen2vl_gguf("f32"))


@pytest.mark.slow
def test_pull_verifies_the_conversion(serve, qwen2vl_checkpoint, tmp_path, capsys):
    """--verify (on by default) compares the pulled checkpoint's conversion with its reference: the checkpoint is
    the hub cache's snapshot, as the manifest records it."""
    pytest.importorskip("torch")
    serve({"tiny/Qwen2-VL-tiny": qwen2vl_checkpoint})
    assert main(["pull", "tiny/Qwen2-VL-tiny", "--quant", "q8_0", "-o", str(tmp_path / "pulled")]) == 0
    assert "verified ok" in capsys.readouterr().err
