"""What the tests share and are not tests themselves: composing the tiny config, fake runs, worker
processes, a private PostgreSQL server, the hang guard. Imported as `helpers.<module>` (pytest puts
tests/ on the path, as it does for conftest.py)."""
