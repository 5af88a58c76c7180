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

__all__ = ["__version__"]
