from echofile.telnet import TelnetCommandFilter


def test_plain_data_passes():
    assert TelnetCommandFilter().feed(b"HELP\r\n") == b"HELP\r\n"


def test_sequences_removed_across_chunks():
    f = TelnetCommandFilter()
    stream = b"A\xff\xfd\x18B\xff\xfa\x18\x00abc\xff\xf0C\xff\xf4D\xff\xffE"
    out = b"".join(f.feed(bytes([b])) for b in stream)
    assert out == b"AB" + b"C" + b"D\xffE"


def test_subnegotiation_with_inner_iac_iac():
    f = TelnetCommandFilter()
    assert f.feed(b"x\xff\xfa\x01\xff\xff\n\xff\xf0y") == b"xy"
