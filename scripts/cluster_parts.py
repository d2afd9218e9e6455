"""Helpers of scripts/cluster.sh (run with the project's venv):

    cluster_parts.py node-config BASE_CONFIG OUT_DIR SIP_PORT RTP_MIN RTP_MAX WEB_PORT [STORAGE_URL]
        write OUT_DIR/config.toml: BASE_CONFIG's settings, its paths made absolute, and
        this node's own ports, SQLite file (or STORAGE_URL), recordings and pid file
    cluster_parts.py probe PORT
        print what 127.0.0.1:PORT answers to a SIP OPTIONS (200, 503...), or "none"
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

from ivr.config import load_settings

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _emit(table: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    plain = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    lines: list[str] = []
    if path and (plain or not tables):
        lines += ["", "[" + ".".join(_key(part) for part in path) + "]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in plain]
    for name, sub in tables:
        lines += _emit(sub, (*path, name))
    return lines


def node_config(
    base: Path,
    out: Path,
    sip_port: int,
    rtp_min: int,
    rtp_max: int,
    web_port: int,
    storage_url: str = "",
) -> Path:
    settings = load_settings(base)  # the base must be valid; its paths come back absolute
    data = tomllib.loads(base.read_text(encoding="utf-8"))

    def put(section: str, key: str, value: object) -> None:
        data.setdefault(section, {})[key] = value

    put("sip", "host", "127.0.0.1")
    put("sip", "public_host", "")
    put("sip", "rtp_host", "")
    put("sip", "port", sip_port)
    put("sip", "rtp_port_min", rtp_min)
    put("sip", "rtp_port_max", rtp_max)
    put("web", "host", "127.0.0.1")
    put("web", "port", web_port)
    put("dialplan", "file", str(settings.dialplan.file))
    put("prompts", "voices_dir", str(settings.prompts.voices_dir))
    put("prompts", "cache_dir", str(settings.prompts.cache_dir))  # shared: rendered once
    put("speech", "models_dir", str(settings.speech.models_dir))
    put("tickets", "gazetteer", str(settings.tickets.gazetteer))
    if settings.tickets.taxonomy is not None:
        put("tickets", "taxonomy", str(settings.tickets.taxonomy))
    storage = data.setdefault("storage", {})
    storage.pop("url", None)
    storage.pop("database", None)
    if storage_url:
        storage["url"] = storage_url  # the one store every node shares
    else:
        storage["database"] = str(out / "ivr.sqlite3")  # for now: each node its own
    storage["recordings_dir"] = str(out / "recordings")
    put("node", "pid_file", str(out / "ivr.pid"))
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        [
            f"# Written by scripts/cluster.sh from {base.resolve()}: edit that file and",
            "# start the cluster again; only ports, paths and the store are this node's own.",
            *_emit(data),
        ]
    )
    path = out / "config.toml"
    path.write_text(text.lstrip("\n") + "\n", encoding="utf-8")
    load_settings(path)  # what we wrote must load
    return path


def probe(port: int) -> str:
    branch = "z9hG4bK" + secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        own = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch={branch};rport\r\n"
                f"From: <sip:cluster@127.0.0.1:{own}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {secrets.token_hex(8)}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        try:
            data = s.recv(65535)
        except OSError:
            return "none"
    parts = data.split(b"\r\n", 1)[0].split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else "none"


def main(argv: list[str]) -> int:
    if len(argv) >= 7 and argv[0] == "node-config":
        base, out = Path(argv[1]), Path(argv[2]).resolve()
        numbers = [int(x) for x in argv[3:7]]
        url = argv[7] if len(argv) > 7 else ""
        print(node_config(base, out, *numbers, storage_url=url))
        return 0
    if len(argv) == 2 and argv[0] == "probe":
        print(probe(int(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
