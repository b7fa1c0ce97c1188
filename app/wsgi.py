"""WSGI entry point: Gunicorn runs ``wsgi:app`` from this directory."""

from weather import create_app

app = create_app()
