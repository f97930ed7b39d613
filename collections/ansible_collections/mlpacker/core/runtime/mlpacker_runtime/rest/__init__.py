"""REST mode: a Flask app served by gunicorn (gthread workers with keep-alive)."""

# The configuration path as ``serve`` was given it (through the service's 'current' link), for a reload.
CONFIG_AS_GIVEN_ENV = "MLPACKER_RUNTIME_CONFIG_AS_GIVEN"
