"""`python -m bench.perf.case NAME PARAMS.json RESULT.json`: run one case in this (fresh) process."""

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    name, params_file, result_file = argv
    from bench.perf.cases import CASES

    params = json.loads(Path(params_file).read_text())
    result = CASES[name](params)
    Path(result_file).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
