"""`python -m bench.perf.case NAME PARAMS.json RESULT.json`: run one case in this (fresh) process."""

import json
import resource
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    name, params_file, result_file = argv
    from bench.perf.cases import CASES

    params = json.loads(Path(params_file).read_text())
    result = CASES[name](params)
    # The process's own CPU time (and its children's): its parent cannot always read it (under py-spy).
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["self_cpu_seconds"] = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    Path(result_file).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
