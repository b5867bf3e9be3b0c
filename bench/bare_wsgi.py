"""The ceiling of the stack for bench/load_bench.py: one bare Flask route, served by the
same gunicorn configuration as Enclave (``gunicorn -c gunicorn.conf.py
bench.bare_wsgi:app``). No database, no session, no templates."""

from flask import Flask

app = Flask(__name__)

PAGE = "<!doctype html><html><head><title>bare</title></head><body><p>ok</p></body></html>"


@app.get("/bare")
def bare() -> str:
    return PAGE
