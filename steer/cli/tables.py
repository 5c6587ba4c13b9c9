"""`steer build-table`: count a corpus's n-grams in a tokenizer's space and save them to one file."""

from __future__ import annotations

import sys
from pathlib import Path

from steer.cli.common import add_command, corpus_help, print_corpus
from steer.cli.flags import add_flags, options
from steer.options import CorpusOptions

EXAMPLE = ("example:\n  steer build-table --corpus don_quixote --tokenizer ../shared/data/models/base-llama2tok "
           "--out quixote.safetensors")


def register(sub) -> None:
    p = add_command(sub, "build-table", "count a corpus's n-grams in a tokenizer's space and save them to one file",
                    cmd_build_table, EXAMPLE)
    p.add_argument("--corpus", required=True, help=corpus_help())
    p.add_argument("--tokenizer", required=True,
                   help="tokenizer folder, model folder or GGUF file (the model you will steer)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--memory-gb", type=float, default=None, metavar="G",
                   help="build within G GiB, counting the corpus file by file into sorted runs on disk and "
                        "merging them (for corpora bigger than memory; orders up to 4 at a 32,000-token vocabulary)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="processes counting corpus files at once (with --memory-gb)")
    p.add_argument("--spill-dir", type=Path, default=None,
                   help="where a bounded build keeps its temporary runs (default: the system's temporary folder; "
                        "on a Ray cluster, a folder every node shares)")
    p.add_argument("--engine", choices=["processes", "ray"], default="processes",
                   help="who counts the corpus files of a bounded build: local processes, or Ray tasks "
                        "(needs steer[ray]; a local Ray unless --address is given)")
    p.add_argument("--address", default=None,
                   help="address of a running Ray cluster (e.g. ray://head:10001 or auto), with --engine ray")
    add_flags(p, CorpusOptions)


def cmd_build_table(args) -> int:
    from ngram import NGramTable
    from steer.corpora import load_corpus
    from steer.models import load_tokenizer

    corpus_options = options(args, CorpusOptions)
    if args.memory_gb is not None:
        table = _build_table_bounded(args, corpus_options)
    else:
        if args.workers != 1 or args.engine != "processes" or args.address is not None:
            raise ValueError("`--workers`, `--engine` and `--address` apply to bounded-memory builds: "
                             "give --memory-gb too")
        corpus = load_corpus(args.corpus, judge_fraction=corpus_options.judge_fraction,
                             encoding=corpus_options.encoding)
        print_corpus(corpus)
        tokenizer = load_tokenizer(args.tokenizer)
        table = NGramTable.from_texts(corpus.steer, tokenizer, corpus_options.order)
        table.save(args.out)
    st = table.stats
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB): order {table.order}, vocabulary {table.vocab_size:,}, "
          f"{st['n_tokens']:,} tokens in {st['n_docs']:,} documents, built in {st['build_seconds']:.2f} s")
    print("n-gram types per order: " + ", ".join(f"{k}: {v:,}" for k, v in st["ngram_types"].items()))
    print(f"use it with: steer generate --table {args.out} ...  or  steer sweep --corpus {args.out} ...")
    return 0



def _build_table_bounded(args, c: CorpusOptions):
    from tqdm import tqdm

    from steer.table_cache import build_table_bounded

    if not args.out.parent.is_dir():
        raise ValueError(f"`out` folder {str(args.out.parent)!r} does not exist")
    with tqdm(desc="counting", unit="tok", unit_scale=True, file=sys.stderr) as bar:
        return build_table_bounded(args.corpus, args.tokenizer, c.order, args.out, memory_gb=args.memory_gb,
                                   workers=args.workers, judge_fraction=c.judge_fraction, encoding=c.encoding,
                                   spill_dir=args.spill_dir, progress=bar.update, engine=args.engine,
                                   address=args.address)


