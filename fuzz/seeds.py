#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/TARGET/*): short, valid sessions that the fuzzer
then mutates; and the inputs that crashed the code before (fuzz/regressions/TARGET/*). Run from anywhere:
python3 fuzz/seeds.py. Deterministic: the files only change when this does."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- AMF0 ----
def num(x):
    return b"\x00" + struct.pack(">d", x)


def string(s):
    b = s.encode()
    return b"\x02" + struct.pack(">H", len(b)) + b


def boolean(v):
    return b"\x01" + (b"\x01" if v else b"\x00")


NULL = b"\x05"


def obj(pairs, marker=b"\x03"):
    out = marker
    for k, v in pairs:
        kb = k.encode()
        out += struct.pack(">H", len(kb)) + kb + v
    return out + b"\x00\x00\x09"


def ecma(pairs):
    return b"\x08" + struct.pack(">I", len(pairs)) + obj(pairs, marker=b"")


def strict(values):
    return b"\x0a" + struct.pack(">I", len(values)) + b"".join(values)


# ---- RTMP chunks: a full header, then continuation chunks ----
def message(csid, type_id, stream_id, payload, ts=0, chunk=128):
    out = bytes([csid]) + struct.pack(">I", ts)[1:] + struct.pack(">I", len(payload))[1:]
    out += bytes([type_id]) + struct.pack("<I", stream_id)
    for i in range(0, max(len(payload), 1), chunk):
        if i:
            out += bytes([0xC0 | csid])
        out += payload[i : i + chunk]
    return out


def command(stream_id, name, txn, *values):
    return message(3, 20, stream_id, string(name) + num(txn) + b"".join(values))


def control(type_id, body):
    return message(2, type_id, 0, body)


METADATA = ecma(
    [
        ("width", num(426)),
        ("height", num(240)),
        ("videocodecid", num(7)),
        ("framerate", num(30)),
        ("audiocodecid", num(10)),
        ("audiosamplerate", num(48000)),
        ("stereo", boolean(False)),
        ("encoder", string("Lavf59")),
    ]
)
AVC_HEADER = bytes([0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F])
KEYFRAME = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x05\x65\x88\x84\x00\x10"
AAC_HEADER = bytes([0xAF, 0, 0x11, 0x90])
AAC_FRAME = bytes([0xAF, 1]) + bytes(range(20))


def connect(app="live"):
    return command(0, "connect", 1, obj([("app", string(app)), ("tcUrl", string("rtmp://h/" + app)), ("objectEncoding", num(0))]))


def publish_session(key="cam", end=True):
    return (
        control(1, struct.pack(">I", 4096))
        + connect()
        + command(0, "releaseStream", 2, NULL, string(key))
        + command(0, "FCPublish", 3, NULL, string(key))
        + command(0, "createStream", 4, NULL)
        + command(1, "publish", 5, NULL, string(key), string("live"))
        + message(4, 18, 1, string("@setDataFrame") + string("onMetaData") + METADATA, chunk=4096)
        + message(6, 9, 1, AVC_HEADER, chunk=4096)
        + message(4, 8, 1, AAC_HEADER, chunk=4096)
        + message(6, 9, 1, KEYFRAME, ts=33, chunk=4096)
        + message(4, 8, 1, AAC_FRAME, ts=21, chunk=4096)
        + control(5, struct.pack(">I", 2500000))
        + control(4, b"\x00\x06" + struct.pack(">I", 7))
        + (command(0, "FCUnpublish", 6, NULL, string(key)) + command(0, "deleteStream", 7, NULL, num(1)) if end else b"")
    )


def play_session(name="cam"):
    return (
        connect()
        + control(5, struct.pack(">I", 5000000))
        + command(0, "createStream", 2, NULL)
        + control(4, b"\x00\x03" + struct.pack(">II", 1, 3000))
        + command(1, "play", 3, NULL, string(name), num(-2000))
        + command(1, "closeStream", 4, NULL)
    )


def handshake():
    # C0 + C1 (time, zero, filler) + C2 (echo of S1: never checked).
    filler = bytes((i * 7 + 3) % 251 for i in range(1528))
    return b"\x03" + bytes(8) + filler + bytes(8) + filler


def server_session():
    # What a server sends a playing client.
    info = obj([("level", string("status")), ("code", string("NetConnection.Connect.Success")), ("description", string("ok"))])
    return (
        control(1, struct.pack(">I", 4096))
        + control(5, struct.pack(">I", 2500000))
        + control(6, struct.pack(">I", 2500000) + b"\x02")
        + control(4, b"\x00\x00" + struct.pack(">I", 0))
        + message(3, 20, 0, string("_result") + num(1) + obj([("fmsVer", string("FMS/3,0,1,123")), ("capabilities", num(31))]) + info, chunk=4096)
        + message(3, 20, 0, string("onBWDone") + num(0) + NULL + num(8192), chunk=4096)
        + message(3, 20, 0, string("_result") + num(2) + NULL + num(1), chunk=4096)
        + message(5, 20, 1, string("onStatus") + num(0) + NULL + obj([("level", string("status")), ("code", string("NetStream.Play.Start"))]), chunk=4096)
        + message(5, 18, 1, string("|RtmpSampleAccess") + boolean(False) + boolean(False), chunk=4096)
        + message(5, 18, 1, string("onMetaData") + METADATA, chunk=4096)
        + message(6, 9, 1, AVC_HEADER, chunk=4096)
        + message(6, 9, 1, KEYFRAME, ts=40, chunk=4096)
        + message(4, 8, 1, AAC_FRAME, ts=21, chunk=4096)
        + control(4, b"\x00\x06" + struct.pack(">I", 99))
        + message(5, 20, 1, string("onStatus") + num(0) + NULL + obj([("level", string("error")), ("code", string("NetStream.Play.StreamNotFound")), ("description", string("gone"))]), chunk=4096)
    )


def nested(depth):
    return b"".join(b"\x03\x00\x04abcd" for _ in range(depth)) + NULL


# A chunk header that starts a 10-byte message inside a 200-byte one on the same chunk stream: rml_rtmp's
# decoder computed 10 - 128 and panicked (or reserved usize::MAX - 117 bytes in a release build).
UNDERFLOW = bytes([4, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0]) + bytes(128) + bytes([4, 0, 0, 0, 0, 0, 10, 9, 1, 0, 0, 0]) + bytes(10)


def write(target, name, data, kind="corpus"):
    d = os.path.join(HERE, kind, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    # edge_session: byte 0 = flags (bit 0 handshake, bit 1 publish key required), byte 1 = read size.
    write("edge_session", "publish", b"\x00\x07" + publish_session())
    write("edge_session", "publish-with-key", b"\x02\x03" + publish_session("cam?key=fuzzkey123"))
    write("edge_session", "play", b"\x00\x00" + play_session())
    write("edge_session", "handshake-then-play", b"\x01\xff" + handshake() + play_session("cam@12D3KooWabc"))
    write("edge_session", "bad-app", b"\x00\x05" + connect("other"))
    write("client_session", "play-replies", b"\x04" + server_session())
    write("amf0", "connect", string("connect") + num(1) + obj([("app", string("live")), ("tcUrl", string("rtmp://h/live"))]))
    write("amf0", "metadata", string("@setDataFrame") + string("onMetaData") + METADATA)
    write(
        "amf0",
        "all-types",
        strict([num(1), boolean(True), NULL, b"\x06", b"\x0d", b"\x0b" + struct.pack(">d", 5) + b"\x00\x00"])
        + b"\x0c" + struct.pack(">I", 3) + b"abc"
        + obj([("c", obj([("d", strict([NULL]))]))], marker=b"\x10\x00\x01C"),
    )

    # Inputs that crashed the code before the edge's own decoders (issue 10): they must now end cleanly.
    write("edge_session", "nested-amf-command", b"\x00\xff" + command(0, "connect", 1, nested(100)), "regressions")
    write(
        "edge_session",
        "nested-amf-data-after-publish",
        b"\x00\xff" + publish_session(end=False) + message(4, 18, 1, string("@setDataFrame") + string("onMetaData") + nested(100), chunk=4096),
        "regressions",
    )
    write("edge_session", "chunk-length-underflow", b"\x00\x00" + UNDERFLOW, "regressions")
    write(
        "edge_session",
        "bare-setdataframe",
        b"\x00\xff" + publish_session(end=False) + message(4, 18, 1, string("@setDataFrame") + string("onMetaData"), chunk=4096),
        "regressions",
    )
    write("client_session", "nested-amf-result", b"\xff" + message(3, 20, 0, string("_result") + num(1) + nested(100)), "regressions")
    write("client_session", "chunk-length-underflow", b"\x00" + UNDERFLOW, "regressions")
    write("amf0", "nested-100", nested(100), "regressions")


if __name__ == "__main__":
    main()
