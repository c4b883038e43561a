"""Bad inputs and faults through the command line (issue 14, items 2-5): each ends in exactly one line
``ultrasound-refine: error: FILE: problem`` and a non-zero exit, never a traceback, never a memory
blow-up, and nothing accepted silently. Bad files are built here, tiny, with lying headers where the
point is what a header claims: no test allocates more than a few megabytes."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sqlite3
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from test_io import save, synthetic_frames, us_dataset  # noqa: E402 - the DICOM builders of the reader tests

PREFIX = "ultrasound-refine: error:"


def one_error(capsys, code: int, *names) -> str:
    """The run failed with exactly one error line, naming each of ``names``, and no traceback. Returns
    what the line says after the file names (``Path`` names), so a word checked in it cannot come from
    a folder name (pytest names temporary folders after the test)."""
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, err
    text = lines[0][len(PREFIX):]
    for name in names:
        assert str(name) in text, lines[0]
        if isinstance(name, Path):
            text = text.split(str(name), 1)[1]
    return text


@pytest.fixture(scope="module")
def phantom(phantom_set) -> Path:
    return phantom_set(2, 3)


@pytest.fixture(scope="module")
def reviewed(phantom, tmp_path_factory, reviewed_session) -> Path:
    """A workspace with both phantom loops suggested and accepted, in the pretrain split (read-only use)."""
    return reviewed_session(tmp_path_factory.mktemp("reviewed") / "ws", phantom,
                            split=["--test-fraction", "0", "--finetune-count", "0"])


@pytest.fixture
def workspace(reviewed, tmp_path) -> Path:
    """A copy of the reviewed workspace that a test may damage."""
    return Path(shutil.copytree(reviewed, tmp_path / "ws"))


# --------------------------------------------------------------------------------------------------
# item 2: no tracebacks


def _jpeg_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def jpeg_dicom(path: Path, *, rows: int | None = None, columns: int | None = None, stream: bytes | None = None) -> Path:
    """A one-frame grey JPEG Baseline US file; ``rows`` / ``columns`` overwrite what the header claims,
    ``stream`` replaces the JPEG codestream."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    frames = synthetic_frames(False, t=1)
    ds = us_dataset(frames, rgb=False, regions=False)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([stream if stream is not None else _jpeg_bytes(frames[0])])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    if rows is not None:
        ds.Rows = rows
    if columns is not None:
        ds.Columns = columns
    return save(ds, path)


def corrupt_dicom(path: Path, encoding: str) -> Path:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, RLELossless

    if encoding == "jpeg":
        return jpeg_dicom(path, stream=b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9")
    ds = us_dataset(synthetic_frames(False, t=1), rgb=False)
    ds.file_meta.TransferSyntaxUID = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}[encoding]
    junk = {"rle": b"\x01\x00\x00\x00" + b"\xff" * 60, "jpeg2000": b"\xff\x4f\xff\x51" + b"\x13" * 12}[encoding]
    ds.PixelData = encapsulate([junk])
    ds["PixelData"].VR = "OB"
    return save(ds, path)


@pytest.mark.parametrize("encoding", ["jpeg", "jpeg2000", "rle"])
def test_corrupt_compressed_pixel_data_is_one_line_and_no_decoder_log(tmp_path, capsys, caplog, encoding):
    """pydicom's decoders log the failure of each plugin with its traceback through the child logger
    ``pydicom.pixels.decoders.base``; none of it may reach our logs (it printed a traceback)."""
    path = corrupt_dicom(tmp_path / f"bad_{encoding}.dcm", encoding)
    with caplog.at_level(logging.DEBUG):
        code = main(["automask", str(path), "--out", str(tmp_path / "out"), "--method", "threshold", "--quiet"])
    line = one_error(capsys, code, path)
    assert "cannot decode the pixel data" in line
    leaked = [r for r in caplog.records if r.name.startswith("pydicom")]
    assert not leaked, [f"{r.name}: {r.getMessage()}" for r in leaked]


def test_train_out_that_is_a_file(reviewed, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    code = main(["train", str(reviewed), "--stage", "pretrain", "--size", "32", "--epochs", "1", "--out", str(target)])
    assert "not a folder" in one_error(capsys, code, target)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_evaluate_json_into_a_folder_or_nowhere(phantom, tmp_path, capsys, where):
    (tmp_path / "a-file").write_text("x")
    target = tmp_path if where == "folder" else tmp_path / "a-file" / "report.json"
    truth = str(phantom / "truth")
    code = main(["evaluate", truth, "--truth", truth, "--json", str(target)])
    one_error(capsys, code, target)


@pytest.mark.parametrize("size", ["3", "0", "40", "40000"])
def test_train_size_out_of_range(reviewed, tmp_path, capsys, size):
    code = main(["train", str(reviewed), "--stage", "pretrain", "--size", size, "--epochs", "1",
                 "--out", str(tmp_path / "m")])
    line = one_error(capsys, code, "--size")
    assert "multiple of 16" in line
    assert not (tmp_path / "m").exists()


def test_decisions_csv_with_a_huge_cell(workspace, tmp_path, capsys):
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("item,decision\n" + "x" * 200_000 + ",accepted\n")
    code = main(["review", str(workspace), "--decisions", str(decisions)])
    one_error(capsys, code, decisions)


def _damage(db: Path, script: str) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(script)
    conn.close()


@pytest.mark.parametrize("damage, problem", [
    ("DROP TABLE decisions", "table decisions"),
    ("DROP INDEX items_group; ALTER TABLE items DROP COLUMN group_key", "column items.group_key"),
    ("UPDATE suggestions SET details = '{not json'", "suggestions.details"),
    ("UPDATE models SET card = 'x' WHERE 0", None),  # no damage: still opens
])
def test_a_workspace_with_the_wrong_schema_is_refused_at_open(workspace, capsys, damage, problem):
    from UltrasoundRefineLib.workspace import Workspace, WorkspaceError

    db = workspace / "workspace.db"
    _damage(db, damage)
    if problem is None:
        Workspace.open(workspace, readonly=True).close()
        return
    with pytest.raises(WorkspaceError, match=problem):
        Workspace.open(workspace, readonly=True)
    for command in (["status", str(workspace)], ["export-masks", str(workspace), "--out", str(workspace.parent / "x")]):
        assert problem in one_error(capsys, main(command), db)


def _model(tmp_path: Path, size: int = 32) -> Path:
    """A small untrained model folder written by save_model (its card is what training writes)."""
    import torch

    from UltrasoundRefineLib.train.model import Model, save_model
    from UltrasoundRefineLib.train.network import build_network, network_kwargs

    torch.manual_seed(0)
    kwargs = network_kwargs("unet", 3)
    card = {"format": 1, "architecture": {"name": "unet", "kwargs": kwargs, "overrides": {}},
            "input": {"size": size, "channels": ["max", "std", "frame"], "layout": "C,S,S float32"},
            "postprocess": "basic"}
    return save_model(Model(net=build_network("unet", kwargs), card=card, device=torch.device("cpu")), tmp_path / "model")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("model"))


def _predict(model: Path, phantom: Path, out: Path) -> int:
    return main(["predict", "--model", str(model), str(phantom / "loops"), "--out", str(out), "--no-tta", "--quiet",
                 "--device", "cpu"])


def test_the_model_fixture_predicts(model_dir, phantom, tmp_path, capsys):
    assert _predict(model_dir, phantom, tmp_path / "out") == 0


def _edit_card(model_dir: Path, tmp_path: Path, edit) -> Path:
    copy = Path(shutil.copytree(model_dir, tmp_path / "edited"))
    card = json.loads((copy / "card.json").read_text())
    edit(card)
    (copy / "card.json").write_text(json.dumps(card))
    return copy


def _set(path: str, value):
    def edit(card):
        *parents, last = path.split(".")
        node = card
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return edit


CARD_DAMAGE = [
    ("input", KeyError, "input"),
    ("architecture", KeyError, "architecture"),
    ("architecture", "unet", "architecture"),
    ("architecture.name", 7, "architecture.name"),
    ("architecture.name", "resnet-9000", "resnet-9000"),
    ("architecture.kwargs", [1, 2], "architecture.kwargs"),
    ("architecture.kwargs.channels", "wide", "unet"),
    ("input.size", "big", "input.size"),
    ("input.size", 40000, "input.size"),  # item 3: would render 40000 x 40000 images
    ("input.size", 48.5, "input.size"),
    ("input.channels", "max", "input.channels"),
    ("input.channels", ["max", "std", "smell"], "smell"),
    ("input.channels", ["max", "std"], "in_channels"),
    ("format", "one", "format"),
    ("postprocess", "sparkle", "postprocess"),
    ("shape_min_agreement", 7, "shape_min_agreement"),
    ("weights_sha256", KeyError, "weights_sha256"),
    ("weights_sha256", 12, "weights_sha256"),
]


@pytest.mark.parametrize("key, value, problem", CARD_DAMAGE, ids=[f"{k}={v!r}" for k, v, _ in CARD_DAMAGE])
def test_a_bad_model_card_is_named(model_dir, phantom, tmp_path, capsys, key, value, problem):
    bad = _edit_card(model_dir, tmp_path, _set(key, value))
    line = one_error(capsys, _predict(bad, phantom, tmp_path / "out"), bad / "card.json")
    assert problem in line
    assert not (tmp_path / "out" / "summary.json").exists()


def test_suggest_with_a_model_whose_card_claims_a_huge_input(model_dir, workspace, tmp_path, capsys):
    """item 3 through `suggest --model`: a card claiming 40000 px inputs rendered 3 GB per loop."""
    bad = _edit_card(model_dir, tmp_path, _set("input.size", 40000))
    line = one_error(capsys, main(["suggest", str(workspace), "--model", str(bad), "--device", "cpu", "--quiet"]),
                     bad / "card.json")
    assert "input.size" in line and "40000" in line


# --------------------------------------------------------------------------------------------------
# item 3: nothing a file claims can exhaust memory


def test_jpeg_dicom_claiming_65535_square_is_refused_before_decoding(tmp_path, capsys, monkeypatch):
    path = jpeg_dicom(tmp_path / "huge.dcm", rows=65535, columns=65535)
    import pydicom.dataset

    def never(*args, **kwargs):
        raise AssertionError("decoded a file whose header claims 4 GB")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(never))
    code = main(["automask", str(path), "--out", str(tmp_path / "out"), "--method", "threshold", "--quiet"])
    assert "65535 x 65535" in one_error(capsys, code, path)


def test_jpeg_dicom_whose_stream_disagrees_with_its_header(tmp_path):
    """Within the sane bounds, the header is still checked against the codestream before decoding."""
    from UltrasoundRefineLib.io import read_loop

    with pytest.raises(InputError, match=r"3000 x 4000.*48 x 64") as e:
        read_loop(jpeg_dicom(tmp_path / "liar.dcm", rows=3000, columns=4000))
    assert e.value.path == str(tmp_path / "liar.dcm")
    assert read_loop(jpeg_dicom(tmp_path / "honest.dcm")).shape == (48, 64)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 8 x 8 grey PNG whose IHDR then claims ``width x height`` (CRC fixed, so readers trust it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_png_claiming_60000_square_is_refused_before_decoding(tmp_path, capsys, monkeypatch):
    path = png_claiming(tmp_path / "huge.png", 60000, 60000)
    real_execute = sitk.ImageFileReader.Execute

    def guarded(self):
        raise AssertionError("decoded a file whose header claims 3.6 GB")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", guarded)
    monkeypatch.setattr(sitk, "ReadImage", lambda *a, **k: guarded(None))
    code = main(["automask", str(path), "--out", str(tmp_path / "out"), "--method", "threshold", "--quiet"])
    assert "60000 x 60000" in one_error(capsys, code, path)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", real_execute)


# --------------------------------------------------------------------------------------------------
# item 4: a model folder is checked, not trusted


def test_tampered_weights_are_refused(model_dir, phantom, tmp_path, capsys):
    import torch

    copy = Path(shutil.copytree(model_dir, tmp_path / "tampered"))
    state = torch.load(copy / "weights.pt", weights_only=True)
    name = next(iter(state))
    state[name] = state[name] + 0.01  # a valid weights file, just not the one the card describes
    torch.save(state, copy / "weights.pt")
    line = one_error(capsys, _predict(copy, phantom, tmp_path / "out"), copy / "weights.pt")
    assert "weights_sha256" in line and "unsafe" not in line


def test_damaged_weights_are_called_corrupt(model_dir, phantom, tmp_path, capsys):
    copy = Path(shutil.copytree(model_dir, tmp_path / "damaged"))
    raw = (copy / "weights.pt").read_bytes()
    (copy / "weights.pt").write_bytes(raw[: len(raw) // 2])
    line = one_error(capsys, _predict(copy, phantom, tmp_path / "out"), copy / "weights.pt")
    assert "corrupt" in line and "unsafe" not in line


class Payload:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


def test_weights_holding_objects_are_called_unsafe(model_dir, phantom, tmp_path, capsys):
    import torch

    copy = Path(shutil.copytree(model_dir, tmp_path / "with-objects"))
    state = torch.load(copy / "weights.pt", weights_only=True)
    state["payload"] = Payload()
    torch.save(state, copy / "weights.pt")
    line = one_error(capsys, _predict(copy, phantom, tmp_path / "out"), copy / "weights.pt")
    assert "unsafe" in line and "corrupt" not in line


# --------------------------------------------------------------------------------------------------
# item 5: nothing accepted silently


def _mask_file(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def _stems(phantom: Path) -> list[str]:
    return sorted(p.stem for p in (phantom / "loops").glob("*.dcm"))


def test_a_probability_map_is_not_a_human_mask(workspace, phantom, tmp_path, capsys, db_rows):
    """0.1 outside, 0.9 inside: read as '> 0' it was a 100% mask. Refused (not thresholded): a map of
    probabilities is a model's output, and a human mask is the ground truth the method trusts most."""
    stem = _stems(phantom)[0]
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom / "truth" / f"{stem}.nrrd")))
    prob = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    path = _mask_file(tmp_path / "masks" / f"{stem}.nrrd", prob)
    line = one_error(capsys, main(["import-masks", str(workspace), str(path)]), path)
    assert "probabilit" in line
    assert db_rows(workspace, "human_masks") == 0


def test_an_empty_mask_is_not_a_human_mask(workspace, phantom, tmp_path, capsys, db_rows):
    stem = _stems(phantom)[0]
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom / "truth" / f"{stem}.nrrd")))
    path = _mask_file(tmp_path / "masks" / f"{stem}.nrrd", np.zeros_like(truth))
    assert "empty" in one_error(capsys, main(["import-masks", str(workspace), str(path)]), path)
    assert db_rows(workspace, "human_masks") == 0
    # the same refusal through the library (what the Slicer module calls)
    from UltrasoundRefineLib.workspace import Workspace

    with Workspace.open(workspace) as ws, pytest.raises(InputError, match="empty"):
        ws.add_human_mask(stem, np.zeros(truth.shape, bool))
    # 0/255 as other tools draw it is a fine mask
    fine = _mask_file(tmp_path / "fine" / f"{stem}.nrrd", (truth > 0).astype(np.uint8) * 255)
    assert main(["import-masks", str(workspace), str(fine)]) == 0
    assert db_rows(workspace, "human_masks") == 1


def test_import_masks_from_a_folder_without_masks(workspace, tmp_path, capsys):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "notes.txt").write_text("no masks")
    line = one_error(capsys, main(["import-masks", str(workspace), str(empty)]), empty)
    assert "no mask files" in line


def test_decisions_are_not_recorded_in_a_deleted_workspace(workspace, tmp_path):
    """SQLite writes on into a database file deleted under it: 'recorded' would have been a lie."""
    from UltrasoundRefineLib.workspace import Workspace, WorkspaceError, apply_decisions_csv

    decisions = tmp_path / "decisions.csv"
    with Workspace.open(workspace) as ws:
        suggestions = ws.suggestions()
        decisions.write_text("suggestion_id,decision\n" + "".join(f"{s.id},rejected\n" for s in suggestions))
        shutil.rmtree(workspace)
        with pytest.raises(WorkspaceError, match="deleted or moved"):
            ws.decide(suggestions[0].id, "rejected", "tester")
        with pytest.raises(WorkspaceError, match="deleted or moved"):  # what `review --decisions` runs
            apply_decisions_csv(ws, decisions, user="tester")


def test_export_names_the_missing_suggestion_file(workspace, tmp_path, capsys):
    missing = sorted((workspace / "suggestions").rglob("*.nrrd"))[0]
    missing.unlink()
    out = tmp_path / "export"
    line = one_error(capsys, main(["export-masks", str(workspace), "--out", str(out)]), missing)
    assert "missing" in line and str(out) not in line


# --------------------------------------------------------------------------------------------------
# the boundary itself


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(capsys, monkeypatch):
    from UltrasoundRefineLib.cli import workspace as ws_cli

    def boom(args):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(ws_cli, "run_status", boom)
    line = one_error(capsys, main(["status", "anywhere"]), "RuntimeError", "something nobody planned for")
    assert "-v" in line
    code = main(["-v", "status", "anywhere"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" in err and "something nobody planned for" in err


def test_an_os_error_names_its_file(capsys, monkeypatch, tmp_path):
    from UltrasoundRefineLib.cli import workspace as ws_cli

    def full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "x.json"))

    monkeypatch.setattr(ws_cli, "run_status", full)
    line = one_error(capsys, main(["status", "anywhere"]), tmp_path / "x.json", "No space left on device")
    assert "OSError" not in line


def test_experiment_out_that_is_a_file_is_refused_before_any_run(reviewed, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    code = main(["experiment", str(reviewed), "--out", str(target), "--device", "cpu"])
    assert "cannot write" in one_error(capsys, code, target)
    assert not (reviewed / "runs").exists() or not any((reviewed / "runs").iterdir())
