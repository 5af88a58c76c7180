"""medfm: medical image interpretation with foundation models.

Layers, each importing only those before it::

    io, metrics  ->  data  ->  models  ->  tasks  ->  bench, report  ->  cli, serve

``import medfm`` stays light: heavy libraries are imported where they are used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medfm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from medfm._provenance import source_state as _source_state

_source_state()  # the source tree's commit as imported (a git checkout only; ~30 ms of `git`)

__all__ = ["__version__"]
