"""Runs one fuzz target (fuzz/targets.py) under atheris, libFuzzer for Python.

    python fuzz/run.py TARGET [--seconds N] [--rss-mb M] [libFuzzer flags]   # fuzz
    python fuzz/run.py TARGET FILE...                                          # replay inputs
    python fuzz/run.py TARGET --merge                                          # keep new coverage

Fuzzing reads the checked-in corpus (fuzz/corpus/TARGET) and writes what it finds to a working
corpus (.fuzz/TARGET/corpus, git-ignored), so that the checked-in one stays small; --merge adds
to the checked-in corpus only the working corpus' inputs (of at most 4 KiB) that reach code it
does not. A crash is written to .fuzz/TARGET/crash-<sha1> with its traceback on standard error:
replay it with the second form. Memory is bounded (-rss_limit_mb, default 1024 MiB: twice the
operator's limit in the chart, the harness' own some 110 MiB included) and so is the time of one
input (-timeout, 10 s).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import shlex
import shutil
import sys

import atheris

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Coverage is what guides libFuzzer: ModelGuard's code is instrumented (kopf's and the libraries'
# are not, to keep each execution fast).
with atheris.instrument_imports(include=["modelguard"]):
    import targets


# The checked-in corpus stays a few hundred KiB: a merge keeps, of what the runs found, only
# inputs this small (libFuzzer's default -max_len); the larger ones stay in .fuzz/.
MERGE_MAX_BYTES = 4096


def _candidates(work: pathlib.Path) -> pathlib.Path:
    """The working corpus' inputs of at most MERGE_MAX_BYTES, in a directory of their own."""
    candidates = work / "merge-candidates"
    shutil.rmtree(candidates, ignore_errors=True)
    candidates.mkdir()
    for found in (work / "corpus").iterdir():
        if found.stat().st_size <= MERGE_MAX_BYTES:
            shutil.copyfile(found, candidates / found.name)
    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(targets.TARGETS))
    parser.add_argument("--seconds", type=int, default=None, help="stop after this long")
    parser.add_argument("--rss-mb", type=int, default=1024, help="memory limit of the process")
    parser.add_argument("--merge", action="store_true", help="merge new coverage into the corpus")
    args, rest = parser.parse_known_args()
    work = HERE.parent / ".fuzz" / args.target
    corpus = HERE / "corpus" / args.target
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    targets.SCRATCH = work / "scratch"
    flags = [
        f"-rss_limit_mb={args.rss_mb}",
        "-timeout=10",
        f"-artifact_prefix={work}/",
        "-print_final_stats=1",
    ]
    if args.seconds is not None:
        flags.append(f"-max_total_time={args.seconds}")
    inputs = [item for item in rest if not item.startswith("-")]
    if args.merge:
        flags += ["-merge=1", str(corpus), str(_candidates(work))]
    elif not inputs:
        flags += [str(work / "corpus"), str(corpus)]
    target = targets.TARGETS[args.target]
    # libFuzzer runs argv[0] through the shell for a merge's child processes: this interpreter,
    # this script and the target, so that the child is this same harness.
    program = " ".join(shlex.quote(part) for part in (sys.executable, __file__, args.target))
    # kopf logs each denial and each handler's failure: the answers are what is judged. Set here
    # and not in the targets, which the unit tests also import (and whose logging they check).
    logging.getLogger("kopf").setLevel(logging.CRITICAL)
    atheris.Setup([program, *flags, *rest], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
