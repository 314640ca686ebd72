"""Wire models and the typed HTTP client shared by apiserver, nodemanager and nodectl."""

__version__ = "0.1.0"
