"""The ``[local]`` extra: servers that run on a developer's machine or beside QStash.

The QStash emulator, the AutoSend sandbox, the Flower-style dashboard, and what only
they use (serving.py: uvicorn and the guards every server shares; files.py: owner-only
SQLite files; faultproxy.py: fault injection). A production install never imports this
folder (tests/test_architecture.py).
"""
