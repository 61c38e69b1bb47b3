"""What the tests (and benchmarks/) share; nothing here is a test and nothing here needs pytest.

- ``builders``: webhook bodies (``upsert``, ``owner``), the real payloads of ``fixtures/``, ``eventually``
- ``fakes``: fake Evolution and Ollama servers on 127.0.0.1
- ``ports``: ``free_port`` and ``closed_port_url``
- ``pg``: a throwaway PostgreSQL cluster and fresh databases in it
- ``serve``: ``hybridflow serve`` (and the CLI) as a child process
- ``cli``: running the CLI in-process with typer's CliRunner and reading what it printed
"""
