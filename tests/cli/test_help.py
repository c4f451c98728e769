"""`slamming --help` lists every command; each command has its own `--help`; usage errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slamming.cli import main
from slamming.cli.tools import kebab_case

#: What `slamming --help` must list, in its order, each with its one-line description.
EXPECTED_COMMANDS = {
    "fit": "train a model from a config (pretraining or DPO); --ckpt_path resumes a run",
    "validate": "run one validation epoch of a config's model on its data",
    "test": "score a model on a config's test data (the benchmarks: configs/eval.yaml)",
    "predict": "run a config's model on its data (audio to units, prompts to continuations)",
    "corpus": "inspect, verify, import and export unit corpora (the authors' .jsonl files)",
    "tokenizer": "make a unit tokeniser: k-means on speech, a community one, or the phone recogniser (data.phone_tokenizer)",
    "export": "export a Lightning checkpoint as a Hugging Face model folder",
}


def _listed(text: str) -> dict[str, str]:
    """The ``  NAME  description`` rows of the top-level help."""
    rows = [line.split(None, 1) for line in text.splitlines() if line.startswith("  ")]
    return {name: what for name, what in rows}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_all_seven_commands(flag: str, capsys: pytest.CaptureFixture) -> None:
    main([flag])
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: slamming COMMAND [OPTIONS]\n")
    assert _listed(captured.out) == EXPECTED_COMMANDS
    assert list(_listed(captured.out)) == list(EXPECTED_COMMANDS)
    assert captured.err == ""


def test_no_command_prints_the_listing_and_one_error_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert _listed("\n".join(err)) == EXPECTED_COMMANDS
    assert err[-1] == "slamming: error: give a command; they are listed above"


def test_top_level_help_does_not_import_lightning() -> None:
    # A tool user should not wait seconds for Lightning to import just to read the listing.
    code = (
        "import sys; from slamming.cli import main; main(['--help']); "
        "assert 'lightning' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert _listed(proc.stdout) == EXPECTED_COMMANDS


@pytest.mark.parametrize(
    ("command", "shows"),
    [
        (
            ["corpus"],
            ["summary", "verify", "import-features", "import-tokens", "export-features", "export-tokens"],
        ),
        (["corpus", "export-tokens"], ["DIR", "DST", "--overwrite", "tokens.jsonl"]),
        (["corpus", "export-features"], ["DIR", "DST", "--overwrite", "features.jsonl"]),
        (["corpus", "import-tokens"], ["SRC", "DST", "--num-units", "--tokenizer", "--overwrite"]),
        (["tokenizer"], ["fit", "from-kmeans", "train-phone"]),
        (
            ["tokenizer", "train-phone"],
            ["--out", "--stories", "--steps", "--merges", "--k", "--voices", "--overwrite"],
        ),
        (["tokenizer", "fit"], ["--kind", "--audio", "--k", "--out", "--max-files", "--overwrite"]),
        (["tokenizer", "from-kmeans"], ["--model", "--kmeans", "--trust-pickle", "--out", "--overwrite"]),
        (["export"], ["CHECKPOINT", "OUT_DIR", "--overwrite"]),
    ],
)
def test_each_tool_has_its_own_help(
    command: list[str], shows: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: slamming {' '.join(command)} [-h]")
    missing = [word for word in shows if word not in out]
    assert missing == []


def test_lightning_commands_keep_their_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config CONFIG" in out and "--budget.max_gpu_hours" in out and "--ckpt_path" in out


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["corpus", "export-tokens", "somewhere"],
            "the following arguments are required: DST; "
            "`slamming corpus export-tokens --help` lists every option",
        ),
        (
            ["corpus", "import-tokens", "a", "b", "--num-units", "many"],
            "argument --num-units: invalid int value: 'many'; "
            "`slamming corpus import-tokens --help` lists every option",
        ),
        (
            ["corpse", "summary"],
            "unknown command 'corpse'; the commands are fit, validate, test, predict, corpus, tokenizer, "
            "export (see `slamming --help`)",
        ),
    ],
)
def test_usage_mistakes_are_one_line(argv: list[str], line: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"slamming: error: {line}"]


def test_an_unknown_action_is_one_line_naming_it(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["corpus", "shuffle", "x"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    # The list of choices between the two is argparse's wording, which changes across Pythons.
    assert line.startswith("slamming: error: argument ACTION: invalid choice: 'shuffle' (choose from ")
    assert line.endswith("export-tokens'); `slamming corpus --help` lists every option") or line.endswith(
        "export-tokens); `slamming corpus --help` lists every option"
    )


def test_snake_case_option_names_are_read_as_kebab_case() -> None:
    argv = ["corpus", "import-tokens", "a_b.jsonl", "--num_units=5", "--tokenizer", "{}", "--", "--x_y"]
    assert kebab_case(argv) == [
        "corpus",
        "import-tokens",
        "a_b.jsonl",
        "--num-units=5",
        "--tokenizer",
        "{}",
        "--",
        "--x_y",
    ]
