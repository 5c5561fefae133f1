"""``python -m taskwatch [options] script.py [args]``: see taskwatch._cli."""

from taskwatch._cli import main

if __name__ == "__main__":
    main()
