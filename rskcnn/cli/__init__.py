"""The command-line tools behind ``python -m rskcnn``: ``info`` and ``bench``.

One job per module: :mod:`.info` reports the build, the backends and ``auto``'s choices;
:mod:`.layers` names the benchmarked convolutions; :mod:`.passes` builds the timed callables;
:mod:`.sweep` decides what is timed in which order (and times busy configurations again);
:mod:`.timing` times one callable; :mod:`.report` writes JSON and Markdown; :mod:`.bench`
parses the options and runs it all.
"""
