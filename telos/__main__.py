import sys

from telos.cli import main

sys.exit(main())
