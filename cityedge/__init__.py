"""cityedge: the edge layer of a city's smart-infrastructure network."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cityedge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
