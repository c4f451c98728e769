"""``slamming corpus …``, ``slamming tokenizer …`` and ``slamming export …``: tools beside Lightning.

::

    slamming corpus summary DIR               documents, tokens, hours, tokeniser of a corpus
    slamming corpus verify DIR                recompute every checksum
    slamming corpus import-features SRC DST --num-units K [--tokenizer ID] [--skip-bad] [--overwrite]
    slamming corpus import-tokens SRC DST --num-units K [--tokenizer ID] [--skip-bad] [--overwrite]
    slamming corpus export-features DIR DST [--overwrite]   write the authors' features.jsonl
    slamming corpus export-tokens DIR DST [--overwrite]     write the authors' tokens.jsonl
    slamming tokenizer fit --kind mfcc|hubert --audio DIR_OR_MANIFEST --k K --out DIR [--overwrite]
    slamming tokenizer from-kmeans --model HUBERT --kmeans FILE [--trust-pickle] --out DIR [--overwrite]
    slamming export CHECKPOINT OUT_DIR [--overwrite]        Lightning checkpoint → Hugging Face folder

Options are ``--kebab-case``; the ``--snake_case`` spelling that the Lightning commands use is
accepted too. Every tool that writes refuses to replace an existing target unless given
``--overwrite``. A usage mistake raises :class:`ToolUsageError`, which :func:`slamming.cli.main`
prints as one line.

The imports refuse a file with a malformed line (nothing is written, exit 2) unless given
``--skip-bad``, which skips such lines and counts them. They record the tokeniser identity that
``--tokenizer`` names (a saved tokeniser folder, or an identity as JSON text or a JSON file); without
it the corpus records an unknown tokeniser (``{"kind": "unknown", "k": K}``), which training and
evaluation refuse to mix with a known one.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from slamming.atomic import check_replaceable
from slamming.errors import SlammingError

#: The tool commands and their one-line descriptions (``slamming --help`` lists them too).
TOOLS: dict[str, str] = {
    "corpus": "inspect, verify, import and export unit corpora (the authors' .jsonl files)",
    "tokenizer": "make a unit tokeniser: k-means on speech, a community one, or the phone recogniser (data.phone_tokenizer)",
    "export": "export a Lightning checkpoint as a Hugging Face model folder",
}

_OVERWRITE = "--overwrite"


class ToolUsageError(Exception):
    """A command line the tools' parser refuses.

    Attributes:
        prog: The command whose parser refused it (``slamming corpus export-tokens``), for the
            ``--help`` hint.
        message: What is wrong, in argparse's words.
    """

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of printing its usage and exiting.

    :func:`slamming.cli.main` prints every error in one style (``slamming: error: …``, exit 2),
    whichever parser found it; argparse's own would print the usage block first.
    """

    def error(self, message: str) -> NoReturn:
        raise ToolUsageError(self.prog, message)


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    """The tokeniser identity ``--tokenizer`` names, or the unknown identity without it."""
    from slamming.speech.tokenizers.identity import unknown_identity

    if not args.tokenizer:
        # The authors' files do not say which tokeniser made them, and a guess would be trusted.
        return unknown_identity(args.num_units)
    given = Path(args.tokenizer)
    if given.is_dir():
        from slamming.speech.tokenizers.base import recorded_identity  # torch: only when needed

        return recorded_identity(given)
    try:
        identity = json.loads(given.read_text(encoding="utf-8") if given.is_file() else args.tokenizer)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise SlammingError(
            f"--tokenizer {args.tokenizer!r} is neither a saved tokeniser folder, a JSON file nor JSON "
            f"text ({err}); give the tokeniser folder that made the units"
        ) from None
    if not isinstance(identity, dict):
        raise SlammingError(
            f"--tokenizer {args.tokenizer!r} is JSON {type(identity).__name__}, not an identity object "
            '(e.g. {"kind": "hubert", "k": 500, ...}); give the tokeniser folder that made the units'
        )
    return identity


def _add(sub: Any, name: str, what: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line description heads its ``--help`` too, not only its parent's."""
    return sub.add_parser(name, help=what, description=what)


def _overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(_OVERWRITE, action="store_true", help=f"replace {what} if it exists")


def _corpus_parser(corpus: argparse.ArgumentParser) -> None:
    csub = corpus.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = _add(csub, "summary", "print documents, tokens, hours and tokeniser of a corpus")
    p.add_argument("path", metavar="DIR", help="the corpus directory")
    p = _add(csub, "verify", "recompute every file's checksum")
    p.add_argument("path", metavar="DIR", help="the corpus directory")
    for name, what in (("import-features", "features.jsonl"), ("import-tokens", "tokens.jsonl")):
        p = _add(csub, name, f"import the authors' {what} into a new corpus")
        p.add_argument("src", metavar="SRC", help=f"the {what} file")
        p.add_argument("dst", metavar="DST", help="the corpus directory to create")
        p.add_argument("--num-units", type=int, required=True, help="number of units K of the tokeniser")
        p.add_argument(
            "--tokenizer",
            help="the saved tokeniser folder that made the units, or its identity as a JSON file or text "
            '(default: unknown, {"kind": "unknown", "k": K}, which is never mixed with a known one)',
        )
        p.add_argument(
            "--skip-bad",
            action="store_true",
            help="skip malformed lines and count them (default: refuse the file, write nothing)",
        )
        _overwrite(p, "the corpus at DST")
    for name, what, detail in (
        ("export-features", "features.jsonl", "units, durations and file names; needs durations"),
        ("export-tokens", "tokens.jsonl", "audio_repr strings of <UnN> tokens; durations are dropped"),
    ):
        p = _add(csub, name, f"write a corpus as the authors' {what} ({detail})")
        p.add_argument("path", metavar="DIR", help="the corpus directory")
        p.add_argument("dst", metavar="DST", help=f"the {what} file to write")
        _overwrite(p, "DST")


def _tokenizer_parser(tok: argparse.ArgumentParser) -> None:
    tsub = tok.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = _add(tsub, "fit", "fit a tokeniser's k-means on speech and save it")
    p.add_argument("--kind", choices=("mfcc", "hubert"), required=True)
    p.add_argument("--audio", required=True, help="an audio folder or a .tsv/.jsonl manifest")
    p.add_argument("--k", type=int, required=True, help="number of units")
    p.add_argument("--out", required=True, help="folder to save the tokeniser to")
    p.add_argument("--model", help="HuBERT folder or hub id (kind hubert)")
    p.add_argument("--layer", type=int, default=11, help="HuBERT layer (default 11, as the paper)")
    p.add_argument("--max-files", type=int, default=2000, help="files read (a seeded sample)")
    p.add_argument("--max-vectors", type=int, default=200_000, help="vectors the k-means sees")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--minibatch", type=int, help="mini-batch k-means with this batch size (kind hubert)")
    p.add_argument(
        "--normalization",
        choices=("corpus", "utterance"),
        default="corpus",
        help="kind mfcc: MFCC statistics and segment threshold of the fitting audio (default) or of each utterance",
    )
    _overwrite(p, "a tokeniser saved in --out")
    p = _add(
        tsub,
        "train-phone",
        "train a CTC phone recogniser on generated stories spoken by espeak-ng and save it as a phone tokeniser",
    )
    p.add_argument("--out", required=True, help="folder to save the tokeniser (and training.json) to")
    p.add_argument(
        "--stories", type=int, default=1000, help="generated training stories it learns from (default 1000)"
    )
    p.add_argument("--story-seed", type=int, default=0, help="seed of the story generator (default 0)")
    p.add_argument("--steps", type=int, default=4000, help="training steps (default 4000)")
    p.add_argument("--merges", type=int, default=300, help="byte-pair merges of the phonemes (default 300)")
    p.add_argument(
        "--k", type=int, default=400, help="number of units: phonemes + merges + spare (default 400)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and voice plan")
    p.add_argument(
        "--voices",
        nargs="+",
        help="espeak-ng voices it hears (default: the demo's four and the 21 recogniser variants)",
    )
    p.add_argument("--workers", type=int, default=2, help="parallel speech processes (default 2)")
    _overwrite(p, "a tokeniser saved in --out")
    p = _add(tsub, "from-kmeans", "a HuBERT tokeniser from a community k-means file (…_km500.bin)")
    p.add_argument("--model", required=True, help="HuBERT folder or hub id, e.g. a local mhubert-base-25hz")
    p.add_argument("--kmeans", required=True, help="a .safetensors centroid file or a joblib/sklearn pickle")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow unpickling (runs code: trusted files only)"
    )
    p.add_argument("--layer", type=int, default=11)
    p.add_argument("--out", required=True, help="folder to save the tokeniser to")
    p.add_argument("--device", default="cpu")
    _overwrite(p, "a tokeniser saved in --out")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every tool command (``corpus``, ``tokenizer``, ``export``)."""
    parser = _Parser(prog="slamming", description="slamming corpus, tokeniser and export tools")
    sub = parser.add_subparsers(dest="tool", metavar="COMMAND", required=True)
    _corpus_parser(_add(sub, "corpus", TOOLS["corpus"]))
    _tokenizer_parser(_add(sub, "tokenizer", TOOLS["tokenizer"]))
    exp = _add(sub, "export", TOOLS["export"])
    exp.add_argument("checkpoint", metavar="CHECKPOINT", help="a .ckpt file of a slamming fit")
    exp.add_argument("out_dir", metavar="OUT_DIR", help="the model folder to write")
    _overwrite(exp, "a model folder at OUT_DIR")
    return parser


def kebab_case(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--snake_case`` option names spelt ``--kebab-case``.

    The Lightning commands take ``--ckpt_path``; accepting that spelling here means a user never
    has to remember which command uses which. Values (after ``=`` or as separate words) and
    everything after a bare ``--`` are left alone.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Rebuild the unit LM stored in a slamming checkpoint and save it with ``save_pretrained``.

    The tokeniser folder (when the checkpoint knows it), the run's budget and its training facts
    travel with it, with the paper's sampling in ``generation_config.json`` and a model card
    ``README.md`` (:func:`slamming.models.unit_lm.export_hf`, which writes the folder beside
    ``out_dir`` and renames it into place, so a failed export leaves any earlier one whole, and a
    replaced one keeps no stale file).

    Args:
        checkpoint: A ``.ckpt`` file of a slamming run (pretraining or DPO).
        out_dir: The model folder to write.
        overwrite: Replace ``out_dir`` if it holds a model folder (anything else is never replaced).

    Returns:
        The folder written.

    Raises:
        SlammingError: ``out_dir`` exists (and ``overwrite`` is false, or it is not a model
            folder), or the checkpoint is missing or not a slamming checkpoint.
    """
    # Imported here: transformers and torch take seconds, and `slamming corpus` needs neither.
    from slamming.models.loading import load_unit_lm
    from slamming.models.unit_lm import export_hf

    out = Path(out_dir)
    check_replaceable(
        out, overwrite, marker="config.json", kind="a model folder", empty_dir_ok=True
    )  # before the checkpoint is read: fail fast
    loaded = load_unit_lm(checkpoint)
    # export_hf writes a hidden folder beside `out` and renames it into place (atomic_folder).
    return export_hf(
        loaded.model,
        out,
        loaded.tokenizer,
        loaded.tokenizer_dir,
        loaded.budget,
        training=loaded.training,
    )


def _run_tokenizer(args: argparse.Namespace) -> None:
    from slamming.data.audio.tokenizer_fit import fit_tokenizer, tokenizer_from_kmeans

    if args.action == "train-phone":
        from slamming.data.pretrain.tokenizer_fit import TRAINING_RECORD, train_story_phone_tokenizer

        record = train_story_phone_tokenizer(
            args.out, stories=args.stories, story_seed=args.story_seed, steps=args.steps,
            merges=args.merges, k=args.k, seed=args.seed, voices=args.voices, workers=args.workers,
            overwrite=args.overwrite,
        )  # fmt: skip
        print(
            f"saved to {args.out} (and {TRAINING_RECORD}): {json.dumps(record['identity'])}; "
            f"CTC loss {record['training']['first_loss']} -> {record['training']['final_loss']} "
            f"in {record['training']['steps']} steps, {record['training']['seconds']:.0f} s"
        )
    elif args.action == "fit":
        result = fit_tokenizer(
            args.kind, args.audio, args.out, args.k, model=args.model, layer=args.layer,
            max_files=args.max_files, max_vectors=args.max_vectors, seed=args.seed, device=args.device,
            minibatch=args.minibatch, overwrite=args.overwrite,
            **({"normalization": args.normalization} if args.kind == "mfcc" else {}),
        )  # fmt: skip
        for path, reason in result["bad_files"]:
            print(f"skipped {path}: {reason}")
        print(f"fitted on {result['files']} files; saved to {args.out}: {json.dumps(result['identity'])}")
    else:
        result = tokenizer_from_kmeans(
            args.model,
            args.kmeans,
            args.out,
            layer=args.layer,
            trust_pickle=args.trust_pickle,
            device=args.device,
            overwrite=args.overwrite,
        )
        print(f"saved to {args.out}: {json.dumps(result['identity'])}")


def _run_corpus(args: argparse.Namespace) -> None:
    from slamming.data.corpus.format import UnitCorpus, summarize
    from slamming.data.corpus.slamkit import (
        export_features_jsonl,
        export_tokens_jsonl,
        import_features_jsonl,
        import_tokens_jsonl,
    )

    if args.action == "summary":
        print(summarize(args.path))
    elif args.action == "verify":
        UnitCorpus(args.path).verify()
        print(f"{args.path}: all checksums match")
    elif args.action in ("import-features", "import-tokens"):
        fn = import_features_jsonl if args.action == "import-features" else import_tokens_jsonl
        identity = _identity(args)
        if identity.get("k", args.num_units) != args.num_units:
            raise SlammingError(
                f"--tokenizer {args.tokenizer} has k={identity['k']!r} but --num-units is {args.num_units}; "
                f"name the tokeniser that made the units of {args.src}, or give its K"
            )
        report = fn(
            args.src,
            args.dst,
            num_units=args.num_units,
            tokenizer=identity,
            overwrite=args.overwrite,
            skip_bad=args.skip_bad,
        )
        print(report.summary())
    else:
        fn = export_features_jsonl if args.action == "export-features" else export_tokens_jsonl
        lines = fn(args.path, args.dst, overwrite=args.overwrite)
        print(f"wrote {lines:,} documents to {args.dst}")


def run_tool(argv: Sequence[str]) -> None:
    """Run ``slamming corpus …``, ``slamming tokenizer …`` or ``slamming export …``.

    Args:
        argv: The command line after ``slamming`` (``["corpus", "summary", DIR]``).

    Raises:
        ToolUsageError: The command line does not parse.
        SlammingError: A user mistake found while running (missing file, existing target, …).
    """
    args = build_parser().parse_args(kebab_case(argv))
    if args.tool == "tokenizer":
        _run_tokenizer(args)
    elif args.tool == "export":
        out = export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite)
        print(f"exported {args.checkpoint} to {out}")
    else:
        _run_corpus(args)
