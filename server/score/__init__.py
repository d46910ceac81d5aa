"""Offline batch scoring with the server's ensemble runtime: `python -m server.score`."""
