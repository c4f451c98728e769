"""``slamming corpus …`` and ``slamming export …``: small tools beside the Lightning commands.

::

    slamming corpus summary DIR               documents, tokens, hours, tokeniser of a corpus
    slamming corpus verify DIR                recompute every checksum
    slamming corpus import-features SRC DST --num-units K [--tokenizer JSON]
    slamming corpus import-tokens SRC DST --num-units K [--tokenizer JSON]
    slamming corpus export-features DIR DST   write the authors' features.jsonl
    slamming export CHECKPOINT OUT_DIR        Lightning checkpoint → Hugging Face folder
    slamming tokenizer fit --kind mfcc|hubert --audio DIR_OR_MANIFEST --k K --out DIR [--model HUBERT]
    slamming tokenizer from-kmeans --model HUBERT --kmeans FILE [--trust-pickle] --out DIR
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slamming.data.corpus.format import UnitCorpus, summarize
from slamming.data.corpus.slamkit import export_features_jsonl, import_features_jsonl, import_tokens_jsonl
from slamming.errors import SlammingError
from slamming.models.unit_lm import export_hf


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    if args.tokenizer:
        try:
            return (
                json.loads(Path(args.tokenizer).read_text())
                if Path(args.tokenizer).exists()
                else json.loads(args.tokenizer)
            )
        except json.JSONDecodeError as err:
            raise SlammingError(
                f"--tokenizer {args.tokenizer!r} is neither a JSON file nor JSON text ({err})"
            ) from None
    # The authors' files do not say which tokeniser made them; the paper's default is recorded.
    return {
        "kind": "hubert",
        "name": "mhubert-base-25hz",
        "layer": 11,
        "k": args.num_units,
        "frame_rate": 25,
        "dedup": True,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slamming", description="slamming corpus and export tools")
    sub = parser.add_subparsers(dest="tool", required=True)
    corpus = sub.add_parser("corpus", help="inspect, verify, import and export unit corpora")
    csub = corpus.add_subparsers(dest="action", required=True)
    csub.add_parser("summary", help="print documents, tokens, hours and tokeniser").add_argument("path")
    csub.add_parser("verify", help="recompute every file's checksum").add_argument("path")
    for name, what in (("import-features", "features.jsonl"), ("import-tokens", "tokens.jsonl")):
        p = csub.add_parser(name, help=f"import the authors' {what} into a corpus")
        p.add_argument("src", help=f"the {what} file")
        p.add_argument("dst", help="the corpus directory to create")
        p.add_argument("--num-units", type=int, required=True, help="number of units K of the tokeniser")
        p.add_argument(
            "--tokenizer", help="tokeniser identity as a JSON file or text (default: mHuBERT-25Hz L11)"
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing corpus at DST")
    p = csub.add_parser("export-features", help="write a corpus as the authors' features.jsonl")
    p.add_argument("path")
    p.add_argument("dst")
    tok = sub.add_parser(
        "tokenizer", help="make a unit tokeniser for `slamming predict` (configs/tiny/tokenize.yaml)"
    )
    tsub = tok.add_subparsers(dest="action", required=True)
    p = tsub.add_parser("fit", help="fit a tokeniser's k-means on speech and save it")
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
    p = tsub.add_parser("from-kmeans", help="a HuBERT tokeniser from a community k-means file (…_km500.bin)")
    p.add_argument("--model", required=True, help="HuBERT folder or hub id, e.g. a local mhubert-base-25hz")
    p.add_argument("--kmeans", required=True, help="a .safetensors centroid file or a joblib/sklearn pickle")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow unpickling (runs code: trusted files only)"
    )
    p.add_argument("--layer", type=int, default=11)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    exp = sub.add_parser("export", help="export a Lightning checkpoint as a Hugging Face model folder")
    exp.add_argument("checkpoint")
    exp.add_argument("out_dir")
    return parser


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the unit LM stored in a slamming checkpoint and save it with ``save_pretrained``.

    The tokeniser folder (when the checkpoint knows it) and the run's budget travel with it.
    """
    from slamming.models.loading import load_unit_lm

    loaded = load_unit_lm(checkpoint)
    return export_hf(loaded.model, out_dir, loaded.tokenizer, loaded.tokenizer_dir, loaded.budget)


def run_tool(argv: Sequence[str]) -> None:
    """Dispatch ``slamming corpus …`` / ``slamming export …``."""
    args = _parser().parse_args(list(argv))
    if args.tool == "tokenizer":
        from slamming.data.audio.tokenizer_fit import fit_tokenizer, tokenizer_from_kmeans

        if args.action == "fit":
            result = fit_tokenizer(
                args.kind, args.audio, args.out, args.k, model=args.model, layer=args.layer,
                max_files=args.max_files, max_vectors=args.max_vectors, seed=args.seed, device=args.device,
                minibatch=args.minibatch,
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
            )
            print(f"saved to {args.out}: {json.dumps(result['identity'])}")
        return
    if args.tool == "export":
        out = export_checkpoint(args.checkpoint, args.out_dir)
        print(f"exported {args.checkpoint} to {out}")
        return
    if args.action == "summary":
        print(summarize(args.path))
    elif args.action == "verify":
        UnitCorpus(args.path).verify()
        print(f"{args.path}: all checksums match")
    elif args.action in ("import-features", "import-tokens"):
        fn = import_features_jsonl if args.action == "import-features" else import_tokens_jsonl
        report = fn(
            args.src, args.dst, num_units=args.num_units, tokenizer=_identity(args), overwrite=args.overwrite
        )
        print(report.summary())
    elif args.action == "export-features":
        export_features_jsonl(args.path, args.dst)
        print(f"wrote {args.dst}")
