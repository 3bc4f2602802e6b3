import sys

from lockoutd.cli import main

sys.exit(main())
