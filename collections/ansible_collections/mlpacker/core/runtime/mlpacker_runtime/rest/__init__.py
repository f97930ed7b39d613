"""REST mode: a Flask app served by gunicorn (gthread workers with keep-alive)."""
