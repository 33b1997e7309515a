"""The command-line tools behind ``python -m rskcnn``: ``info`` and ``bench``.

Each module has one job: :mod:`.info` reports backends and ``auto``'s choices,
:mod:`.layers` names the benchmarked convolutions, :mod:`.passes` builds the timed
callables, :mod:`.bench` runs the timings and :mod:`.report` writes JSON and Markdown.
"""
