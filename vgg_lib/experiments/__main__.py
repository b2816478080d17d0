"""``python -m vgg_lib.experiments reproduce|evaluate|transfer|localise|verify``."""

from __future__ import annotations

import argparse
import json
import sys

from . import grid as G
from . import runner as R


def parser() -> argparse.ArgumentParser:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m vgg_lib.experiments", description=doc.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reproduce", help="run the reference grid (resumable; finished runs reused)")
    r.add_argument("--runs", nargs="+", choices=list(G.RUNS), help="only these runs (and what they need)")
    r.add_argument("--seeds", nargs="+", type=int, help="only these of each run's seeds (default: all)")
    r.add_argument("--jobs", type=int, default=2, help="parallel processes, one thread each")
    e = sub.add_parser("evaluate", help="evaluate one trained reference run")
    e.add_argument("name", choices=list(G.RUNS))
    e.add_argument("seed", type=int)
    e.add_argument("method")
    e.add_argument("scales", default="paper")
    e.add_argument("--size", type=int)
    t = sub.add_parser("transfer", help="Appendix B features of one source net on shapes")
    t.add_argument("source", choices=list(G.TRANSFER_SOURCES))
    t.add_argument("seed", type=int)
    loc = sub.add_parser("localise", help=f"Appendix A: the localisers of {G.LOC_SOURCE} (trained first if missing)")
    loc.add_argument("--variants", nargs="+", choices=[*G.LOCALISERS, *G.LOCALISER_UNIONS],
                     help="only these localisers or unions (a union brings its members)")
    loc.add_argument("--seeds", nargs="+", type=int, default=list(G.SEEDS))
    loc.add_argument("--jobs", type=int, default=1, help="tasks at a time, one thread each")
    sub.add_parser("verify", help=f"re-train {G.folder_name(*G.VERIFY)} and compare with results/")
    return p


def _report(failures) -> int:
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "reproduce":
        names = G.with_dependencies(args.runs) if args.runs else None
        return _report(R.reproduce(names, args.seeds and tuple(args.seeds), args.jobs))
    if args.cmd == "localise":  # the localisers and the training runs they start from, nothing else
        return _report(R.reproduce(G.with_dependencies([G.LOC_SOURCE]), tuple(args.seeds), args.jobs,
                                   parts=("train", "localise"), localisers=args.variants))
    if args.cmd == "evaluate":
        scales = args.scales if args.scales in ("paper", "train") else [int(q) for q in args.scales.split(",")]
        R.evaluate_run(args.name, args.seed, args.method, scales, args.size)
        return 0
    if args.cmd == "transfer":
        R.transfer_run(args.source, args.seed)
        return 0
    print(json.dumps(R.verify(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
