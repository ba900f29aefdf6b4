"""strcred plugin: ``--auth htpasswd:PATH`` (see echofile.htpasswd)."""
from echofile.htpasswd import checkerFactory as echofileHtpasswd  # noqa: F401
