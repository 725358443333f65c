"""The terminal chat (``localmem chat``): a Textual app over the Assistant."""

from .app import ChatApp

__all__ = ["ChatApp"]
