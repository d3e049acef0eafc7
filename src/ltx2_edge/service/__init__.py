"""``ltx2-edge serve``: an always-on local video service (OpenAI Videos API, durable queue, web page).

Layout, one job per module: ``api_models`` (request bodies and response shapes), ``app`` (routes), ``core``
(admission, cancel, delete: what a route asks for), ``admission`` (what a body means on this server),
``config`` (settings, ``ApiError``), ``store`` (SQLite job store), ``scheduler`` (the one GPU
worker), ``engine`` (every call into the generator), ``prompt_cache`` (prompt embeddings across clips),
``events`` (server-sent events), ``auth`` and ``guards`` (token, host and origin checks, body limits), ``files``
(the data directory), ``expiry`` (output TTL), ``server`` (uvicorn), ``live`` (the app on a thread of this
process), ``client`` (``ltx2-edge submit``); the page is ``web/``.

Importing this package imports nothing heavy: torch and FastAPI load only in the modules that need them.
"""
