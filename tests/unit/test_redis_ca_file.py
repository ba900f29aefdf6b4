"""
--cluster rediss://...?ssl_ca_certs=PATH: the PEM file is read once, with a
size cap, when the URL is parsed; a file that cannot be a CA bundle is a
usage error naming the option, not a broker that never verifies.
"""

from __future__ import annotations

import os

import pytest
import twisted.test
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from echofile import redislink
from echofile.redislink import MAX_CA_FILE, endpointFor, parseRedisURL
from echofile.tap import Options, makeService

PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")  # a key and a certificate


def url(path) -> str:
    return f"rediss://:hunter2@h:1/0?ssl_ca_certs={path}"


def test_a_pem_file_is_read_when_the_url_is_parsed():
    address = parseRedisURL(url(PEM))
    assert address.caCerts == PEM and len(address.caCertificates) == 1
    assert "BEGIN" not in repr(address)


def test_the_endpoint_reads_no_file(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(open(PEM, "rb").read())
    address = parseRedisURL(url(ca))
    ca.unlink()  # what the services connect with was read when the URL was parsed
    endpointFor(address, MemoryReactorClock())


def test_a_bundle_of_several_certificates(tmp_path):
    certificate = open(PEM, "rb").read().split(b"-----BEGIN CERTIFICATE-----")[1]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# a comment\n" + (b"-----BEGIN CERTIFICATE-----" + certificate) * 3)
    assert len(parseRedisURL(url(bundle)).caCertificates) == 3


def test_a_file_just_under_the_cap_is_taken(tmp_path):
    pem = open(PEM, "rb").read()
    big = tmp_path / "big.pem"
    big.write_bytes(pem + b"\n" * (MAX_CA_FILE - len(pem)))
    assert len(parseRedisURL(url(big)).caCertificates) == 1


def _refusal(path) -> str:
    with pytest.raises(ValueError) as e:
        parseRedisURL(url(path))
    assert "hunter2" not in str(e.value)
    return str(e.value)


def test_a_file_over_the_cap_is_refused(tmp_path):
    pem = open(PEM, "rb").read()
    big = tmp_path / "big.pem"
    big.write_bytes(pem + b"\n" * (MAX_CA_FILE + 1 - len(pem)))
    assert "larger than 1024 KiB" in _refusal(big)


def test_a_directory_is_refused(tmp_path):
    assert "not a regular file" in _refusal(tmp_path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in _refusal(fifo)


def test_a_file_without_a_certificate_is_refused(tmp_path):
    key = tmp_path / "key.pem"
    key.write_bytes(open(PEM, "rb").read().split(b"-----BEGIN CERTIFICATE-----")[0])  # the private key only
    assert "no PEM certificate" in _refusal(key)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    assert "no PEM certificate" in _refusal(empty)


def test_a_broken_certificate_is_refused(tmp_path):
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    assert "not valid PEM" in _refusal(broken)


def test_a_missing_file_is_refused(tmp_path):
    assert "no such file" in _refusal(tmp_path / "nope.pem")


def test_it_reaches_the_operator_as_a_usage_error(served, tmp_path):
    with pytest.raises(usage.UsageError, match=r"--cluster: ssl_ca_certs: not a regular file"):
        Options().parseOptions(["--root", str(served), "--cluster", url(tmp_path)])


def test_a_file_refused_by_the_system_is_refused(monkeypatch):
    def refuse(path, flags, *args):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(redislink.os, "open", refuse)
    assert "cannot open" in _refusal(PEM) and "Permission denied" in _refusal(PEM)


def test_the_service_tree_reads_it_once(served, monkeypatch):
    options = Options()
    options.parseOptions(["--root", str(served), "--cluster", url(PEM)])
    reads = []
    read = redislink.readCACertificates
    monkeypatch.setattr(redislink, "readCACertificates", lambda path: reads.append(path) or read(path))
    service = makeService(options, reactor=MemoryReactorClock(), environ={"ECHOFILE_PASSWORD": "pw"})
    assert reads == [PEM]  # for the chat and the penalties both
    assert service.getServiceNamed("chat").address is service.getServiceNamed("penalties").address
