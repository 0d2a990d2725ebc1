"""How long provider notifications wait while the webhook's codec decodes large requests.

Starts the webhook service from a source tree (default: this one) in a child process, with a
fresh codec key and a Stripe webhook secret, and measures `POST /notify/stripe` latency (each
is signed with a wrong secret: the answer is 401, after the signature check):

- alone, then
- while `--decoders` clients post `--mib` MiB `POST /codec/decode` requests back to back (the
  payloads encrypted with the service's key, `--payload-kib` KiB each), for `--rounds` each.

    .venv/bin/python scripts/codec_stall.py
    mkdir /tmp/before && git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python scripts/codec_stall.py --tree /tmp/before

A tree from before the internal listener serves /codec on the webhook port: the script finds
the codec wherever the service has it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload

from tempay.codec import EncryptionCodec, parse_keys

STRIPE_SECRET = "whsec_codec_stall_" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def decode_body(key_entry: str, mib: float, payload_kib: int) -> bytes:
    codec = EncryptionCodec(parse_keys(key_entry))
    size = payload_kib * 1024
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * (size - 2) + b'"')
    one = json_format.MessageToDict(codec.encrypt(plain))
    wire_size = len(json.dumps(one)) + 1
    count = max(1, int(mib * 1024 * 1024 * 0.98) // wire_size)  # just under the cap
    return json.dumps({"payloads": [one] * count}).encode()


def start_service(
    tree: Path, data_dir: Path, key_entry: str
) -> tuple[subprocess.Popen[bytes], int, int]:
    public, internal = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPAY_")}
    env.update(
        PYTHONPATH=str(tree),
        TEMPAY_DATA_DIR=str(data_dir),
        TEMPAY_SANDBOX="false",
        TEMPAY_WEBHOOK_PORT=str(public),
        TEMPAY_INTERNAL_PORT=str(internal),
        TEMPAY_CODEC_KEYS=key_entry,
        TEMPAY_STRIPE_API_KEY="sk_test_codec_stall",
        TEMPAY_STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        TEMPORAL_ADDRESS="127.0.0.1:1",  # never reached: every notification is refused first
    )
    process = subprocess.Popen(
        [sys.executable, "-c", "from webhook.app import main; main()"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{public}/healthz", timeout=1).status_code == 200:
                return process, public, internal
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the webhook service did not start within 30 s")


def codec_url(public: int, internal: int) -> str:
    try:
        httpx.get(f"http://127.0.0.1:{internal}/healthz", timeout=1)
    except httpx.TransportError:
        return f"http://127.0.0.1:{public}/codec"  # one listener serves everything
    return f"http://127.0.0.1:{internal}/codec"


def notify_once(http: httpx.Client) -> float:
    body = json.dumps({"id": "evt_stall", "type": "checkout.session.completed"}).encode()
    started = time.perf_counter()
    response = http.post(
        "/notify/stripe",
        content=body,
        headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},
    )
    assert response.status_code == 401, response.status_code
    return time.perf_counter() - started


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name}: n={len(ms)} median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--mib", type=float, default=4.0, help="codec request size")
    parser.add_argument("--payload-kib", type=int, default=1, help="size of each payload")
    parser.add_argument("--decoders", type=int, default=1, help="concurrent decode clients")
    parser.add_argument("--rounds", type=int, default=5, help="decodes per client")
    parser.add_argument(
        "--chunk-kib",
        type=int,
        default=0,
        help="send each decode body in chunks of this size, as a slow link delivers it "
        "(default: all at once)",
    )
    args = parser.parse_args()

    key_entry = f"kstall:{base64.b64encode(os.urandom(32)).decode()}"
    body = decode_body(key_entry, args.mib, args.payload_kib)
    with tempfile.TemporaryDirectory() as data_dir:
        process, public, internal = start_service(args.tree, Path(data_dir), key_entry)
        try:
            codec = codec_url(public, internal)
            print(f"tree {args.tree}; codec at {codec}; decode body {len(body) / 2**20:.2f} MiB")
            with httpx.Client(base_url=f"http://127.0.0.1:{public}", timeout=120) as http:
                for _ in range(20):
                    notify_once(http)  # warm up
                print(summary("notify alone", [notify_once(http) for _ in range(200)]))

                decodes: list[tuple[int, float]] = []
                running = threading.Event()

                def decoder() -> None:
                    with httpx.Client(timeout=120) as client:
                        for _ in range(args.rounds):
                            started = time.perf_counter()
                            running.set()
                            answer = client.post(f"{codec}/decode", content=sent(body))
                            decodes.append((answer.status_code, time.perf_counter() - started))

                def sent(data: bytes) -> bytes | Iterator[bytes]:
                    if not args.chunk_kib:
                        return data
                    step = args.chunk_kib * 1024
                    return (data[i : i + step] for i in range(0, len(data), step))

                threads = [threading.Thread(target=decoder) for _ in range(args.decoders)]
                for thread in threads:
                    thread.start()
                running.wait()
                during = []
                while any(thread.is_alive() for thread in threads):
                    during.append(notify_once(http))
                for thread in threads:
                    thread.join()
                statuses = sorted({status for status, _ in decodes})
                print(
                    f"decodes: n={len(decodes)} answered {statuses}, median "
                    f"{statistics.median(s for _, s in decodes):.2f} s, max "
                    f"{max(s for _, s in decodes):.2f} s"
                )
                print(summary(f"notify during {args.decoders} decoder(s)", during))
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
