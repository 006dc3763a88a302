"""Watching a run as a user does: the trackers it reports to, its progress on a terminal and in a log, the notices
of other libraries kept quiet, and the loss pictures (`loss.png`, `loss.svg`, `lmforge plot`)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from cli_runs import LMFORGE, lmforge, recipe, write_chat, write_text

TRACKED = {  # the log-history key and the tracker's name for it (console: loss, lr, grad, trained tok/s, eval loss)
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "trained_tokens_per_second": "train/trained_tokens_per_second",
    "eval_loss": "eval/loss",
}
NOISE = ("FutureWarning", "DeprecationWarning", "Setting accelerator to CPU", "Loading weights")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir) -> tuple[Path, str]:
    """A finished LoRA SFT run with eval (every 2 of its 4 steps), reporting to TensorBoard (the default), its
    output piped as in CI: (the run directory, what it printed)."""
    folder = tmp_path_factory.mktemp("watched")
    path = recipe(folder, tiny_model_dir, "sft", write_chat(folder / "chat.jsonl"), eval_every=2)
    out = lmforge("train", str(path), "data.eval.fraction=0.2", cwd=folder)
    assert out.returncode == 0, out.stderr
    return folder / "run-sft", out.stderr


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory, tiny_model_dir) -> tuple[Path, str]:
    """A pretraining run of 3 steps (no checkpoint) on a terminal (a pseudo-terminal of 30 x 120), with -v and no
    tracker."""
    folder = tmp_path_factory.mktemp("terminal")
    path = recipe(folder, tiny_model_dir, "pt", write_text(folder / "text.jsonl"), max_steps=3, save_every=10)
    status, text = in_terminal(["-v", "train", str(path), "train.report_to=none"], cwd=folder)
    assert status == 0, text
    return folder / "run-pt", text


def in_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run lmforge with stdin, stdout and stderr on a pseudo-terminal; its exit status and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([*LMFORGE, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=600), b"".join(chunks).decode("utf-8", errors="replace")


def test_tensorboard_gets_the_logged_values_under_the_trackers_names(sft_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = sft_run
    history = json.loads((run / "log_history.json").read_text())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for key, name in TRACKED.items():
        logged = {h["step"]: h[key] for h in history if key in h}
        written = {e.step: e.value for e in events.Scalars(name)}
        assert logged and written.keys() == logged.keys(), name
        assert all(written[s] == pytest.approx(v, rel=1e-6, abs=1e-12) for s, v in logged.items()), name
    assert not (run / "runs").exists()  # not transformers' default folder


def test_a_missing_tracker_package_is_said_before_any_data_work(tmp_path, tiny_model_dir):
    import importlib.util

    from lmforge.config.load import load_recipe
    from lmforge.errors import LmforgeError
    from lmforge.train.run import run_training

    absent = [name for name in ("mlflow", "swanlab", "wandb") if importlib.util.find_spec(name) is None]
    if not absent:
        pytest.skip("every optional tracker is installed here")
    path = recipe(tmp_path, tiny_model_dir, "sft", tmp_path / "no-such-data.jsonl")  # data work would fail
    with pytest.raises(LmforgeError, match=rf"train.report_to: {absent[0]} is not installed; pip install "):
        run_training(load_recipe(path, [f"train.report_to={absent[0]}"]))
    assert not (tmp_path / "run-sft").exists()


def test_not_a_terminal_plain_lines_the_final_eval_once_and_no_third_party_noise(sft_run):
    _, err = sft_run
    assert re.search(r"^  step 1/4 \| loss \d\.\d{4} \| lr .* trained tok/s \| eta ", err, re.M), err
    assert "\r" not in err and "█" not in err  # no bar in a log
    assert err.count("step 4/4 | eval loss") == 1 and err.count("step 2/4 | eval loss") == 1, err
    for notice in NOISE:
        assert notice not in err, notice


@pytest.mark.slow  # a second run (about 15 s); test_console.py checks the filter itself in the default run
def test_a_terminal_gets_a_bar_and_verbose_shows_the_notices(terminal_run):
    run, text = terminal_run
    assert re.search(r"step 3/3 \|█+\| loss \d\.\d{4} \| [\d,]+ trained tok/s \| \d\d:\d\d elapsed, eta ", text), text
    assert not re.search(r"^  step \d/3 \| loss", text, re.M)  # the bar instead of the lines
    assert "Loading weights" in text  # -v: transformers' bar, hidden by default (the piped run above)
    assert (run / "model.safetensors").exists() and not (run / "tensorboard").exists()  # report_to=none


def test_the_run_draws_its_loss_as_png_and_svg(sft_run):
    run, _ = sft_run
    png = (run / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (800, 450) and len(png) > 10_000
    texts = svg_texts(run / "loss.svg")
    for label in ("run-sft", "optimizer step", "loss", "learning rate", "train loss", "eval loss"):
        assert label in texts, label
    assert {"1", "2", "3", "4"} <= set(texts)  # the steps' tick labels
    assert "metrics.json" in os.listdir(run) and "loss.svg" in (run / "README.md").read_text()


def test_plot_overlays_several_runs_and_redraws_a_stopped_runs_checkpoint(sft_run, tmp_path):
    from lmforge.cli import main
    from lmforge.commands.plot import run_plot
    from lmforge.errors import LmforgeError

    sft, _ = sft_run
    other = tmp_path / "run-b"  # a second finished run: the first one's history, each loss 1 higher
    other.mkdir()
    history = json.loads((sft / "log_history.json").read_text())
    higher = [{**h, "loss": h["loss"] + 1} if "loss" in h else h for h in history]
    (other / "log_history.json").write_text(json.dumps(higher))
    assert main(["plot", str(sft), str(other), "--out", str(tmp_path / "both.svg")]) == 0  # in this process
    texts = svg_texts(tmp_path / "both.svg")
    assert {"run-sft train loss", "run-sft eval loss", "run-b train loss", "run-b learning rate"} <= set(texts)
    assert "run-sft, run-b" in texts  # the title

    checkpoint = sft / "checkpoint-2"  # a run stopped there has no log_history.json: its trainer state has it
    assert run_plot([checkpoint], None) == [checkpoint / "loss.png", checkpoint / "loss.svg"]
    assert {"run-sft/checkpoint-2", "train loss"} <= set(svg_texts(checkpoint / "loss.svg"))
    with pytest.raises(LmforgeError, match="--out"):  # several runs make one picture: it needs a name
        run_plot([sft, other], None)


def svg_texts(path: Path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())


@pytest.mark.slow
def test_wandb_offline_and_mlflow_files_get_what_tensorboard_gets(tmp_path, tiny_model_dir):
    """Every tracker installed here, in one run: the same values under the same names (wandb offline, MLflow's
    local file store); what is not installed is skipped with its name."""
    import importlib.util

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    others = [name for name in ("wandb", "mlflow") if importlib.util.find_spec(name) is not None]
    if not others:
        pytest.skip("neither wandb nor mlflow is installed here (pip install 'lmforge[wandb]' 'lmforge[mlflow]')")
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"), eval_every=2)
    trackers = ",".join(["tensorboard", *others])
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"file:{tmp_path / 'mlruns'}",
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 keeps the file store but asks for this to use it
    }
    out = subprocess.run(
        [*LMFORGE, "train", str(path), "data.eval.fraction=0.2", f"train.report_to=[{trackers}]"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run-sft"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    board = {name: {e.step: e.value for e in events.Scalars(name)} for name in TRACKED.values()}
    if "wandb" in others:
        (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
        assert_same(by_name(wandb_history(log)), board)
    if "mlflow" in others:
        assert_same(mlflow_metrics(tmp_path / "mlruns", list(board)), board)


def assert_same(tracked: dict[str, dict[int, float]], board: dict[str, dict[int, float]]) -> None:
    """The same names, steps and values (within float32, TensorBoard's precision) as TensorBoard got."""
    assert tracked.keys() == board.keys()
    for name, values in board.items():
        assert tracked[name].keys() == values.keys(), name
        assert all(tracked[name][s] == pytest.approx(v, rel=1e-6, abs=1e-12) for s, v in values.items()), name


def by_name(rows: list[dict]) -> dict[str, dict[int, float]]:
    """W&B history rows as {name: {step: value}} for the tracked names."""
    return {name: {row["train/global_step"]: row[name] for row in rows if name in row} for name in TRACKED.values()}


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file: LevelDB-log records (7-byte headers in 32 KiB blocks after
    the file's 7-byte header) holding wandb's Record protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block = path.read_bytes(), 32768
    pos, pending, rows = 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4 : pos + 7])
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def mlflow_metrics(store: Path, names: list[str]) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file:{store}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)} for name in names}


@pytest.mark.slow
def test_a_tracker_that_cannot_start_is_a_message_and_the_start_is_undone(tmp_path, tiny_model_dir):
    pytest.importorskip("wandb", reason="needs wandb (pip install 'lmforge[wandb]')")
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"))
    out = subprocess.run(
        [*LMFORGE, "train", str(path), "train.report_to=wandb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "not-a-mode", "WANDB_DIR": str(tmp_path)},
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "train.report_to: wandb could not start" in out.stderr and "not-a-mode" in out.stderr
    assert not (tmp_path / "run-sft").exists()  # nothing trained: nothing left to block a rerun
