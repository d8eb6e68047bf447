import sys

from recdistill_dagster.cli import main

sys.exit(main())
