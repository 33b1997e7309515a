"""The command-line tools behind ``python -m rskcnn``: argument parsing only, each module
one subcommand that hands its parsed options to the library.

:mod:`.info` reports the build, the backends and ``auto``'s choices; :mod:`.bench` and
:mod:`.plot` are the options of :mod:`rskcnn.bench` (the benchmark machinery, usable from
Python); :mod:`.calibrate` turns bench results into ``auto``'s GPU table; :mod:`.train` runs
the paper's training comparison; :mod:`.arguments` holds the argument types they share.
"""
