import sys

from sharp.cli import main

sys.exit(main())
