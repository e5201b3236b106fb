import sys

from randfx.cli import main

sys.exit(main())
