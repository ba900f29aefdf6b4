"""
Every use of a private Twisted API, in one place.

The server relies on a few things Twisted does not promise, each reached
only through a function of this package, one module per thing it reaches
into:

- L{tcp}: the write buffer of a plain TCP transport (the direct send of
  echo replies, files replies and chat events, sendfile's "is the buffer
  empty?", closing a flushed transport in the turn its peer's FIN arrives);
- L{wrappers}: LineReceiver's input buffer and loop flag, the PROXY
  protocol wrapper's parsed header and C{dataReceived};
- L{tlsrecords}: the TLS protocol's connection and state flags with
  pyOpenSSL's cffi binding (a file body's batched writes: the SSL object's
  mode, its write BIO);
- L{tlssteps}: the steps of the TLS protocol's connection set-up and output
  that L{echofile.tlslayer} does with less work;
- L{endpoints}: the TLS options inside an C{ssl:} endpoint (to turn
  session resumption on), a hook on the port it listens with;
- L{logs}: the observers of a log publisher, the file of a file observer
  and the lock of a log file (twistd's text log, L{echofile.logformat}).

tests/unit/test_twistedinternals.py pins the behaviour each one relies on:
a Twisted upgrade that changes one breaks that test, not the server.
Where the attributes are missing, the callers fall back to the public path
(C{transport.write}).  Callers import the names from here.
"""

from echofile.twistedinternals.endpoints import ListeningHook, serverTLSOptions, tlsFactoryOf
from echofile.twistedinternals.logs import (
    LogFileLines, directLogFileLines, logObservers, nativeLogFileLock, observerFile, restoreLogFile,
)
from echofile.twistedinternals.tcp import (
    canSendDirectly, closeFlushed, directSocket, sendfileDescriptor, unsentBytes, writeNow,
)
from echofile.twistedinternals.tlsrecords import (
    HELD_OUTPUT, heldOutputFull, knowTLSType, tlsWritesDropped, writeTLSBatched,
)
from echofile.twistedinternals.tlssteps import (
    connectTLS, flushBeforeShutdown, flushSmallWrites, forgetProducer, holdSmallWrites, releaseProducer,
    sendTLSOutput, stopReleasedProducer,
)
from echofile.twistedinternals.wrappers import (
    insideLineLoop, interceptData, isProxyWrapper, parsedHeader, restoreData, unframedInput,
)

__all__ = [
    "HELD_OUTPUT", "ListeningHook", "LogFileLines", "canSendDirectly", "closeFlushed", "connectTLS",
    "directLogFileLines", "directSocket", "flushBeforeShutdown", "flushSmallWrites", "forgetProducer", "heldOutputFull",
    "holdSmallWrites", "insideLineLoop", "interceptData", "isProxyWrapper", "knowTLSType", "logObservers",
    "nativeLogFileLock", "observerFile", "parsedHeader", "releaseProducer", "restoreData", "restoreLogFile",
    "sendTLSOutput", "sendfileDescriptor", "serverTLSOptions", "stopReleasedProducer", "tlsFactoryOf",
    "tlsWritesDropped", "unframedInput", "unsentBytes", "writeNow",
]
