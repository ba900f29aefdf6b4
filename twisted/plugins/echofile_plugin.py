"""twistd plugin: ``twistd -n echofile`` (see echofile.tap)."""
from twisted.application.service import ServiceMaker

echofile = ServiceMaker("echofile", "echofile.tap", "Echo service and a telnet-friendly file/chat server.", "echofile")
