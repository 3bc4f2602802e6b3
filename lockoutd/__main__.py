import sys

from lockoutd.cli import program

sys.exit(program())
