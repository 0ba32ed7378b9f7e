"""Django integration: ``urls`` mounts the QStash callback receiver (``receiver``)."""
