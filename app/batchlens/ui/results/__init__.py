"""The results browser: every result of an output folder in a grid (browser.ResultsBrowser), and the
standalone window `batchlens --results DIR` opens (window.ResultsWindow)."""

from batchlens.ui.results.browser import ResultsBrowser

__all__ = ["ResultsBrowser"]
