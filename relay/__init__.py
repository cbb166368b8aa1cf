"""mindvideo-relay: MindVideo generations without polling."""

__version__ = "0.1.0"
