import sys

from keeptune.cli import main

sys.exit(main())
