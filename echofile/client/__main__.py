"""``python -m echofile.client``: the same as ``echofile-client``."""

from echofile.client.main import main

main()
