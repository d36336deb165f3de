"""`python app.py [evalsvc serve options]`: the evalsvc app on the default store (see `evalsvc serve --help`)."""

import sys

from evalsvc.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
