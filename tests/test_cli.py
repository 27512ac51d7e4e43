import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emodiff.cli import build_parser, main
from emodiff.labels import EMOTIONS
from emodiff.settings import EditSettings


def _edit(model_dir, out, *args):
    return main(["edit", *map(str, args), "--out", str(out), "--model", str(model_dir), "--steps", "3", "--from", "sad"])


def _no_partial_files(directory):
    return not list(directory.rglob("*.tmp")) if directory.exists() else True


def test_edit_writes_every_target_at_the_input_size_and_a_grid(model_dir, face_files, tmp_path):
    small, odd = face_files
    out = tmp_path / "out"
    assert _edit(model_dir, out, small, odd, "--to", "all", "--grid") == 0
    for emotion in EMOTIONS:
        edited = Image.open(out / f"odd_{emotion}.png")
        assert edited.size == (52, 60) and edited.mode == "L"
        assert Image.open(out / f"small_{emotion}.png").size == (48, 48)
    assert (out / "small_grid.png").exists() and (out / "odd_grid.png").exists()
    assert _no_partial_files(out)


def test_a_folder_of_faces_is_edited_in_batches(model_dir, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"f{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert _edit(model_dir, out, folder, "--to", "happy", "--batch-size", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"f{i}_happy.png" for i in range(5)]


def test_same_seed_gives_identical_files(model_dir, face_files, tmp_path):
    small, _ = face_files
    for name in ("a", "b"):
        assert _edit(model_dir, tmp_path / name, small, "--to", "happy,fear", "--mode", "sdedit", "--seed", "5") == 0
    for emotion in ("happy", "fear"):
        assert (tmp_path / "a" / f"small_{emotion}.png").read_bytes() == (tmp_path / "b" / f"small_{emotion}.png").read_bytes()


def test_unknown_emotion_lists_the_valid_names(model_dir, face_files, tmp_path, capsys):
    assert _edit(model_dir, tmp_path / "out", face_files[0], "--to", "joyful") == 2
    message = capsys.readouterr().err
    assert "joyful" in message and all(name in message for name in EMOTIONS)
    assert not (tmp_path / "out").exists()


def test_missing_and_unreadable_inputs_are_named_and_the_rest_edited(model_dir, face_files, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    status = _edit(model_dir, out, tmp_path / "missing.png", broken, face_files[0], "--to", "happy")
    assert status != 0
    err = capsys.readouterr().err
    assert "missing.png" in err and "broken.png" in err
    assert (out / "small_happy.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["small_happy.png"]


@pytest.mark.parametrize("option", [["--strength", "0"], ["--strength", "1.2"], ["--steps", "0"], ["--steps", "-3"]])
def test_bad_strength_or_steps_are_refused_before_any_work(face_files, tmp_path, capsys, option):
    out = tmp_path / "out"
    # a model path that does not exist: refusing must happen before loading anything
    status = main(["edit", str(face_files[0]), "--to", "happy", "--out", str(out), "--model", str(tmp_path / "nope"), *option])
    assert status == 2
    assert option[0].lstrip("-") in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_fingers_share_outside_0_to_1_is_refused_before_training(fer_csv, tmp_path, capsys, value):
    out = tmp_path / "guide"
    with pytest.raises(SystemExit) as stop:
        main(["train-encoder", "guide", "--data", str(fer_csv), "--out", str(out), "--fingers", value])
    assert stop.value.code == 2 and "fraction from 0 to 1" in capsys.readouterr().err and not out.exists()


def test_bad_model_dir_is_named(face_files, tmp_path, capsys):
    status = main(["edit", str(face_files[0]), "--to", "happy", "--out", str(tmp_path / "o"), "--model", str(tmp_path)])
    assert status == 2 and str(tmp_path) in capsys.readouterr().err


def test_sample_writes_n_faces(model_dir, tmp_path):
    out = tmp_path / "samples"
    assert main(["sample", "--emotion", "Surprise", "-n", "3", "--out", str(out), "--model", str(model_dir), "--steps", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"surprise_{i:03d}.png" for i in range(3)]


COMMANDS = build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help(command):
    sub = COMMANDS[command]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    # argparse %-formats option help but prints a description as written: a doubled %% must not show
    assert "%%" not in sub.format_help(), f"emodiff {command} --help shows '%%'"


def test_console_script_help_runs():
    result = subprocess.run([sys.executable, "-m", "emodiff.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("train-encoder", "train", "edit", "sample"):
        assert command in result.stdout


@pytest.mark.slow
def test_evaluate_writes_report_metrics_and_figures(model_dir, fer_csv, tmp_path):
    import json

    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_dir), "--data", str(fer_csv), "--per-class", "1", "--steps", "3", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    assert {p.name for p in out.iterdir()} == {"report.md", "metrics.json", "edits.csv", "grid.png", "confusion.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inputs"] == 7 and metrics["edits"] == 49
    # every edit's record, both judges' verdicts in it: what emodiff compare pairs
    from emodiff.evaluation import EditRecords

    records = EditRecords.read_csv(out)
    assert records.judged.shape == records.judged_second.shape == (7, 7) and main(["compare", str(out), str(out)]) == 0
    assert "| **all** |" in (out / "report.md").read_text()
    # the shipped second judge reports beside the first, on the same edits
    assert metrics["second_judge"]["model"] == "TransformerJudge"
    assert sum(map(sum, metrics["second_judge"]["emotion"]["confusion"])) == 49
    assert "F1, second judge" in (out / "report.md").read_text()


@pytest.mark.slow
def test_sweep_covers_the_grid_and_marks_its_choice(model_dir, fer_csv, tmp_path, tiny_judges):
    import json

    out = tmp_path / "sweep"
    args = ["sweep", "--model", str(model_dir), "--data", str(fer_csv), "--per-class", "1", "--out", str(out), "--device", "cpu", *tiny_judges]
    grid = ["--modes", "invert,paper", "--strengths", "0.5", "--guidances", "1,3", "--steps", "2", "--keep-detail", "off,on"]  # strengths: the mouth-strength test
    assert main([*args, *grid]) == 0
    result = json.loads((out / "sweep.json").read_text())
    settings = {(r["mode"], r["strength"], r["guidance"], r["steps"], r["keep_detail"]) for r in result["rows"]}
    assert len(result["rows"]) == len(settings) == 2 * 2 + 2  # paper mode has no strength nor keep-detail
    assert {(r["mode"], r["push_threshold"]) for r in result["rows"]} == {("invert", 0.5), ("paper", 0.0)}  # each mode's default
    defaults = EditSettings()  # a row names the push's factors too, so rows of different pushes are not confused
    assert {(r["push_low"], r["push_high"], r["push_same_step"]) for r in result["rows"]} == {(defaults.push_low, defaults.push_high, False)}
    assert result["chosen"] in result["rows"]
    assert "**(chosen)**" in (out / "sweep.md").read_text() and (out / "sweep.png").stat().st_size > 0
    guidance = json.loads((out / "edit_defaults.json").read_text())["guidance"]  # two guidances: one per emotion
    assert sorted(guidance) == sorted(EMOTIONS) and set(guidance.values()) <= {1.0, 3.0}
    # the per-emotion scales were measured as one more row, and the file holds what the rule prefers
    combined = result["per_emotion_row"]
    assert combined["model"] == f"{result['chosen']['model']}, per-emotion scales" and combined not in result["rows"]
    assert combined["guidance"] is None and sorted(combined["per_emotion"]) == sorted(EMOTIONS)
    if result["edit_defaults"] == "the chosen setting's scales for every emotion":
        assert set(guidance.values()) == {result["chosen"]["guidance"]}
    else:
        assert result["edit_defaults"] == "the per-emotion scales"
    assert "| per emotion | per emotion |" in (out / "sweep.md").read_text()
    # every row's edits are kept, numbered in order, so any two rows can be paired
    files = [r["edits"] for r in result["rows"]] + [combined["edits"]]
    assert files == [f"edits/{i:02d}.csv" for i in range(1, len(files) + 1)] and all((out / f).exists() for f in files)
    assert main(["compare", str(out / files[0]), str(out / files[-1])]) == 0


def test_sweep_over_mouth_strengths_keeps_those_above_each_strength(model_dir, fer_csv, tmp_path, tiny_judges):
    import json

    out = tmp_path / "sweep"
    args = ["sweep", "--model", str(model_dir), "--data", str(fer_csv), "--per-class", "1", "--out", str(out), "--device", "cpu", *tiny_judges]
    grid = ["--modes", "invert", "--strengths", "0.3,0.6", "--mouth-strengths", "0,0.5", "--guidances", "2", "--steps", "4", "--keep-detail", "on"]
    assert main([*args, *grid, "--push-thresholds", "0"]) == 0  # as sweeps ran before the push was the default
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert sorted((r["strength"], r["mouth_strength"]) for r in rows) == [(0.3, 0.0), (0.3, 0.5), (0.6, 0.0)]  # 0.5 is no deeper than 0.6
    assert {r["push_threshold"] for r in rows} == {0.0}
    assert "| mouth strength |" in (out / "sweep.md").read_text() and "| 0.3 | 0.5 |" in (out / "sweep.md").read_text()


def test_sweep_over_push_factors_gives_the_push_off_one_row(model_dir, fer_csv, tmp_path, tiny_judges):
    import json

    out = tmp_path / "sweep"
    args = ["sweep", "--model", str(model_dir), "--data", str(fer_csv), "--per-class", "1", "--out", str(out), "--device", "cpu", *tiny_judges]
    grid = ["--modes", "invert", "--strengths", "0.3", "--guidances", "2", "--steps", "4", "--keep-detail", "on"]
    assert main([*args, *grid, "--own-scales", "--push-thresholds", "0,0.5", "--push-factors", "0.5:1.5,0.6:2"]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert all(r["guidance"] is None and r["classifier_guidance"] is None and r["negative"] is None for r in rows)  # the model's own
    defaults = EditSettings()
    assert sorted((r["push_threshold"], r["push_low"], r["push_high"]) for r in rows) == [
        (0.0, defaults.push_low, defaults.push_high), (0.5, 0.5, 1.5), (0.5, 0.6, 2.0)
    ]  # fmt: skip
    table = (out / "sweep.md").read_text()
    assert "| off |" in table and "| 0.5x, 1.5x below 0.5 |" in table and "| 0.6x, 2x below 0.5 |" in table
    assert "| own | own | own |" in table
    with pytest.raises(SystemExit):
        main([*args, *grid, "--push-factors", "0.5-1.5"])


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--model", "nowhere"], "nowhere"),
        (["--strength", "1.5"], "strength"),
        (["--per-class", "0"], "--per-class"),
        (["--second-judge", "cnn"], "--second-judge cnn: a EmotionCNN, expected a judge"),
    ],
)
def test_evaluate_refuses_bad_options_before_any_work(model_dir, fer_csv, tmp_path, capsys, bad, message):
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_dir), "--data", str(fer_csv), "--out", str(out), *bad]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_split_is_refused_with_the_valid_names(fer_csv, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(fer_csv), "--out", str(tmp_path / "e"), "--split", "Validation"])
    assert "PublicTest" in capsys.readouterr().err


def test_test_encoder_scores_a_judge_with_and_without_test_time_views(fer_csv, tmp_path, capsys):
    import torch

    from emodiff.encoders import EmotionJudge

    torch.manual_seed(0)
    judge = EmotionJudge(widths=(8, 8, 8, 8), blocks=(1, 1, 1, 1))
    with torch.no_grad():  # confident logits, so that the views' disagreement shows in the printed loss
        judge.head[1].weight.mul_(100)
    judge.save_pretrained(tmp_path / "judge")
    base = ["test-encoder", str(tmp_path / "judge"), "--data", str(fer_csv), "--device", "cpu"]
    assert main(base) == 0
    assert main([*base, "--tta-shift", "0", "--tta-rotate", "0", "--tta-zoom", "0"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("EmotionJudge on")]
    assert len(lines) == 2 and all("accuracy" in line for line in lines)
    assert lines[0] != lines[1]  # 18 views against the mirror pair: the loss differs


def test_demo_writes_one_grid_of_every_bundled_input_and_its_seven_edits(model_dir, tmp_path, capsys):
    from emodiff.assets import CELL, sample_faces, sample_photos, view

    out = tmp_path / "demo.png"
    assert main(["demo", "--model", str(model_dir), "--out", str(out), "--steps", "2", "--device", "cpu"]) == 0
    grid = np.asarray(Image.open(out).convert("RGB"))
    rows, columns = len(sample_faces()) + len(sample_photos()), 1 + len(EMOTIONS)
    pad, top = 2, 14  # labelled_grid's spacing and column-label strip
    assert grid.shape[0] == top + rows * (CELL + pad)
    left = grid.shape[1] - columns * (CELL + pad)
    cell = lambda r, c: grid[top + r * (CELL + pad) : top + r * (CELL + pad) + CELL, left + c * (CELL + pad) : left + c * (CELL + pad) + CELL]  # noqa: E731
    first_face = Image.open(sample_faces()[0])
    np.testing.assert_array_equal(cell(0, 0), view(first_face))  # the input column shows the input
    for r in range(rows):
        changed = sum(np.abs(cell(r, c).astype(int) - cell(r, 0)).mean() > 0.5 for c in range(1, columns))
        assert changed >= columns - 2, r  # every edit changed the face, but the one to its own emotion may not
    assert f"edited {rows} faces to 7 emotions" in capsys.readouterr().out


def test_help_and_argument_errors_answer_without_importing_torch():
    probe = (
        "import sys; from emodiff.cli import build_parser\n"
        "parser = build_parser()\n"
        "try:\n    parser.parse_args(['edit', 'x.png', '--out', 'o'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert "--to" in result.stderr  # the missing option is named


def test_asking_for_an_absent_cuda_is_an_error_not_a_silent_cpu_run(face_files, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["predict", str(face_files[0]), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert main(["edit", str(face_files[0]), "--to", "happy", "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_push_options_reach_the_edit_settings():
    from emodiff.cli import _config

    args = build_parser().parse_args(["edit", "face.png", "--to", "happy", "--out", "o", "--push-same-step", "--push-low", "0.4", "--push-high", "1.4"])
    settings = _config(EditSettings, args)
    assert (settings.push_same_step, settings.push_low, settings.push_high) == (True, 0.4, 1.4)
    assert _config(EditSettings, build_parser().parse_args(["edit", "face.png", "--to", "happy", "--out", "o"])) == EditSettings()
