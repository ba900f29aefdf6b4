"""echofile: an echo service and a telnet-friendly file/chat protocol on Twisted."""

__version__ = "0.1.0"
