import sys

from pipeline.adapters.cli import main

sys.exit(main())
