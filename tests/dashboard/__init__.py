"""Dashboard, API and end-to-end status tests (and the fake QStash they share)."""
