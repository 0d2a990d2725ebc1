"""A local fake of the part of Stripe's API that tempay's Stripe adapter uses, for tests.

Served over real HTTP (tests.support.stack.serve) on 127.0.0.1. Like Stripe it checks the Bearer
key, takes form-encoded bodies, honours Idempotency-Key (same key and parameters: the stored
answer again, marked `Idempotent-Replayed: true`; same key with other parameters: 400
idempotency_error), answers errors as `{"error": {"type", "code", "message"}}`, and amounts
are integers of minor units. State lives in memory.

Endpoints: POST /v1/checkout/sessions, GET /v1/checkout/sessions/{id} (expand[] =
payment_intent), POST /v1/checkout/sessions/{id}/expire, POST /v1/payment_intents, GET
/v1/payment_intents/{id} (expand[] = latest_charge), POST /v1/payment_intents/{id}/cancel,
GET /v1/payment_intents/search (only `metadata['order_id']:'X'`), POST /v1/refunds, and the
lists GET /v1/checkout/sessions (status=, created[gte|gt|lt|lte]=, expand[] =
data.payment_intent and data.payment_intent.latest_charge), GET /v1/payment_intents
(created[...]=, expand[] = data.latest_charge) and GET /v1/refunds (payment_intent=,
created[...]=, expand[] = data.payment_intent), newest first and paginated by limit /
starting_after / has_more as Stripe's; `max_page_size` caps a page lower than Stripe's 100,
to prove paging. A succeeded PaymentIntent has a Charge (its `latest_charge`), created when
paid. A PaymentIntent create is checked as Stripe checks it: unknown parameters, a missing
or non-integer amount, one under the currency's minimum charge or over eight digits, a
malformed currency, metadata keys over 40 or values over 500 characters are refused; only
the statuses Stripe cancels can be canceled (payment_intent_unexpected_state otherwise).

The payer and Stripe's own processing are methods (`pay`, `decline`, `expire`, ...) that
change the state and return the event Stripe would send; for a PaymentIntent the payer's
page holds only its client_secret, so those methods (`confirm_intent`, `decline_intent`,
`process_intent`, `settle_intent`) take the secret and refuse one Stripe would not know.
`signed` signs an event (its own HMAC code, independent of the adapter's) and `send` POSTs
it to a webhook.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SEARCH_QUERY = re.compile(r"^metadata\['order_id'\]:'([^']*)'$")
KEY_FIELD = re.compile(r"^([a-z_]+)((?:\[[^\]]*\])*)$")


class StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.code = status, type_, message, code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        return error

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body()}, status_code=self.status)


def unflatten(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) as nested dicts (lists stay index-keyed)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = KEY_FIELD.match(key)
        if not match:
            raise StripeError(400, "invalid_request_error", f"Invalid parameter: {key}")
        path = [match.group(1), *re.findall(r"\[([^\]]*)\]", match.group(2))]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StripeError(400, "invalid_request_error", f"Invalid parameter: {key}")
        node[path[-1]] = value
    return out


# Stripe's minimum charge amounts, in minor units, for the currencies tests use.
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "jpy": 50}
# What POST /v1/payment_intents takes (a subset of Stripe's; anything else is unknown).
INTENT_PARAMS = {
    "amount",
    "currency",
    "automatic_payment_methods",
    "payment_method_types",
    "capture_method",
    "description",
    "metadata",
    "receipt_email",
    "statement_descriptor_suffix",
}
# The statuses Stripe cancels a PaymentIntent in (and, "in rare cases", processing).
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
)
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")


def _int(value: Any, param: str) -> int:
    if not isinstance(value, str) or not value.isdigit():
        raise StripeError(
            400, "invalid_request_error", f"Invalid integer: {param}", "parameter_invalid_integer"
        )
    return int(value)


@dataclass
class FakeStripe:
    api_key: str
    webhook_secrets: list[str]
    base_url: str = "http://stripe.invalid"  # set once served: session urls point here
    refund_status: str = "succeeded"  # what a new refund is; "pending" for slow methods
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    # client_secret -> PaymentIntent id, for those made by POST /v1/payment_intents.
    client_secrets: dict[str, str] = field(default_factory=dict)
    # The most a list page holds, whatever `limit` asks (Stripe's own cap is 100).
    max_page_size: int = 100
    # (method, path) of every request that passed authentication, in order.
    calls: list[tuple[str, str]] = field(default_factory=list)
    # Idempotency-Key -> (fingerprint of the request, status, body)
    stored: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    # Faults: path -> HTTP status to answer (before processing) next time; and paths whose
    # next answer is lost after processing (the result is stored under the key, as Stripe's is).
    fail_next: dict[str, int] = field(default_factory=dict)
    lose_answer_next: set[str] = field(default_factory=set)
    # Paths whose next answer comes this many seconds after processing (client timeouts).
    slow_answer_next: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self._ids):06d}"

    # ---- the API ----------------------------------------------------------------------------

    def app(self) -> FastAPI:
        app = FastAPI(title="fake stripe")

        @app.api_route("/v1/{path:path}", methods=["GET", "POST"])
        async def api(path: str, request: Request) -> JSONResponse:
            full = f"/v1/{path}"
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return StripeError(
                    401, "invalid_request_error", "Invalid API Key provided"
                ).response()
            self.calls.append((request.method, full))
            if full in self.fail_next:
                status = self.fail_next.pop(full)
                return StripeError(
                    status, "api_error", "Something went wrong on Stripe's end."
                ).response()
            raw = (await request.body()).decode()
            form = parse_qsl(raw, keep_blank_values=True)
            query = list(request.query_params.multi_items())
            if request.method == "GET":
                return self._answer(*self._get(full, query))
            key = request.headers.get("idempotency-key")
            if not key:
                # Stripe accepts POSTs without a key; tempay never sends one.
                return StripeError(
                    400, "invalid_request_error", "tempay must send Idempotency-Key"
                ).response()
            fingerprint = json.dumps([full, sorted(form)])
            if key in self.stored:
                seen, status, body = self.stored[key]
                if seen != fingerprint:
                    return StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with.",
                    ).response()
                response = self._answer(status, body)
                response.headers["Idempotent-Replayed"] = "true"
                return response
            status, body = self._post(full, form)
            self.stored[key] = (fingerprint, status, body)
            if full in self.slow_answer_next:
                await asyncio.sleep(self.slow_answer_next.pop(full))
            if full in self.lose_answer_next:
                self.lose_answer_next.discard(full)
                return JSONResponse({"error": "bad gateway"}, status_code=502)
            return self._answer(status, body)

        return app

    @staticmethod
    def _answer(status: int, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(copy.deepcopy(body), status_code=status)

    def _post(self, path: str, form: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
        try:
            params = unflatten(form)
            if path == "/v1/checkout/sessions":
                return 200, self._create_session(params)
            if match := re.fullmatch(r"/v1/checkout/sessions/([^/]+)/expire", path):
                return 200, self._expire_session(match.group(1))
            if path == "/v1/refunds":
                return 200, self._create_refund(params)
            if path == "/v1/payment_intents":
                return 200, self._create_intent(params)
            if match := re.fullmatch(r"/v1/payment_intents/([^/]+)/cancel", path):
                return 200, self._cancel_intent(match.group(1), params)
            raise StripeError(
                404, "invalid_request_error", f"Unrecognized request URL (POST: {path})"
            )
        except StripeError as exc:
            return exc.status, {"error": exc.body()}

    def _get(self, path: str, query: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
        try:
            params = dict(query)
            if match := re.fullmatch(r"/v1/checkout/sessions/([^/]+)", path):
                session = copy.deepcopy(self._session(match.group(1)))
                expand = [v for k, v in query if k == "expand[]"]
                if "payment_intent" in expand and session["payment_intent"]:
                    session["payment_intent"] = copy.deepcopy(
                        self.intents[session["payment_intent"]]
                    )
                return 200, session
            if path == "/v1/payment_intents/search":
                match = SEARCH_QUERY.match(params.get("query", ""))
                if not match:
                    raise StripeError(
                        400,
                        "invalid_request_error",
                        "Unsupported search query",
                        "parameter_invalid",
                    )
                found = [
                    i
                    for i in self.intents.values()
                    if i["metadata"].get("order_id") == match.group(1)
                ]
                return 200, {
                    "object": "search_result",
                    "data": found,
                    "has_more": False,
                    "url": path,
                }
            if path == "/v1/payment_intents":
                return 200, self._list_intents(params, query)
            if match := re.fullmatch(r"/v1/payment_intents/([^/]+)", path):
                intent = copy.deepcopy(self._payment_intent(match.group(1)))
                expand = [v for k, v in query if k == "expand[]"]
                if "latest_charge" in expand and intent["latest_charge"]:
                    intent["latest_charge"] = copy.deepcopy(self.charges[intent["latest_charge"]])
                return 200, intent
            if path == "/v1/refunds":
                return 200, self._list_refunds(params, query)
            if path == "/v1/checkout/sessions":
                return 200, self._list_sessions(params, query)
            raise StripeError(
                404, "invalid_request_error", f"Unrecognized request URL (GET: {path})"
            )
        except StripeError as exc:
            return exc.status, {"error": exc.body()}

    def _session(self, session_id: str) -> dict[str, Any]:
        if session_id not in self.sessions:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such checkout.session: '{session_id}'",
                "resource_missing",
            )
        return self.sessions[session_id]

    def _payment_intent(self, intent_id: str) -> dict[str, Any]:
        if intent_id not in self.intents:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such payment_intent: '{intent_id}'",
                "resource_missing",
            )
        return self.intents[intent_id]

    @staticmethod
    def _check_metadata(metadata: Any) -> dict[str, str]:
        if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
            raise StripeError(400, "invalid_request_error", "Invalid metadata", "parameter_invalid")
        if len(metadata) > 50:
            raise StripeError(
                400,
                "invalid_request_error",
                "Invalid metadata: at most 50 keys",
                "parameter_invalid",
            )
        for key, value in metadata.items():
            if len(key) > 40 or len(value) > 500:
                raise StripeError(
                    400,
                    "invalid_request_error",
                    "Invalid metadata: keys can be at most 40 characters and values at most 500",
                    "parameter_invalid",
                )
        return metadata

    def _create_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        if unknown := sorted(set(params) - INTENT_PARAMS):
            raise StripeError(
                400,
                "invalid_request_error",
                f"Received unknown parameter: {unknown[0]}",
                "parameter_unknown",
            )
        for required in ("amount", "currency"):
            if required not in params:
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"Missing required param: {required}.",
                    "parameter_missing",
                )
        amount = _int(params["amount"], "amount")
        currency = params["currency"]
        if not isinstance(currency, str) or not re.fullmatch(r"[a-z]{3}", currency):
            raise StripeError(
                400, "invalid_request_error", f"Invalid currency: {currency}", "parameter_invalid"
            )
        if amount < MINIMUM_CHARGE.get(currency, 1):
            raise StripeError(
                400,
                "invalid_request_error",
                f"Amount must be at least {MINIMUM_CHARGE.get(currency, 1)} {currency}",
                "amount_too_small",
            )
        if amount > 99_999_999:
            raise StripeError(
                400,
                "invalid_request_error",
                "Amount must be no more than 8 digits",
                "amount_too_large",
            )
        automatic = params.get("automatic_payment_methods", {})
        if not isinstance(automatic, dict) or automatic.get("enabled", "true") not in (
            "true",
            "false",
        ):
            raise StripeError(
                400,
                "invalid_request_error",
                "Invalid boolean: automatic_payment_methods[enabled]",
                "parameter_invalid_boolean",
            )
        intent_id = self._id("pi")
        secret = f"{intent_id}_secret_{secrets.token_urlsafe(18)}"
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "automatic_payment_methods": {"enabled": automatic.get("enabled") == "true"}
            if automatic
            else None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": params.get("capture_method", "automatic"),
            "client_secret": secret,
            "currency": currency,
            "description": params.get("description"),
            "metadata": self._check_metadata(params.get("metadata", {})),
            "status": "requires_payment_method",
            "created": int(time.time()),
            "last_payment_error": None,
            "latest_charge": None,
        }
        self.intents[intent_id] = intent
        self.client_secrets[secret] = intent_id
        return copy.deepcopy(intent)

    def _cancel_intent(self, intent_id: str, params: dict[str, Any]) -> dict[str, Any]:
        intent = self._payment_intent(intent_id)
        reason = params.get("cancellation_reason")
        if reason is not None and reason not in CANCELLATION_REASONS:
            raise StripeError(
                400,
                "invalid_request_error",
                f"Invalid cancellation_reason: must be one of {', '.join(CANCELLATION_REASONS)}",
                "parameter_invalid",
            )
        if intent["status"] not in CANCELABLE:
            raise StripeError(
                400,
                "invalid_request_error",
                f"You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                f"may be canceled: {', '.join(CANCELABLE)}, processing.",
                "payment_intent_unexpected_state",
            )
        intent.update(status="canceled", canceled_at=int(time.time()), cancellation_reason=reason)
        return copy.deepcopy(intent)

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise StripeError(
                400, "invalid_request_error", "mode must be payment here", "parameter_invalid"
            )
        if not params.get("success_url"):
            raise StripeError(
                400,
                "invalid_request_error",
                "Missing required param: success_url.",
                "parameter_missing",
            )
        try:
            item = params["line_items"]["0"]
            price = item["price_data"]
            currency = price["currency"]
            unit = _int(price["unit_amount"], "unit_amount")
            quantity = _int(item["quantity"], "quantity")
            name = price["product_data"]["name"]
        except KeyError as exc:
            raise StripeError(
                400, "invalid_request_error", f"Missing required param: {exc}", "parameter_missing"
            ) from None
        if currency != currency.lower() or len(currency) != 3:
            raise StripeError(
                400, "invalid_request_error", f"Invalid currency: {currency}", "parameter_invalid"
            )
        session_id = self._id("cs")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "url": f"{self.base_url}/c/pay/{session_id}",
            "amount_total": unit * quantity,
            "currency": currency,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "payment_intent": None,
            "success_url": params["success_url"],
            "cancel_url": params.get("cancel_url"),
            "created": now,
            "expires_at": int(params["expires_at"]) if "expires_at" in params else now + 86400,
            "line_item_name": name,
            "_intent_metadata": params.get("payment_intent_data", {}).get("metadata", {}),
        }
        self.sessions[session_id] = session
        return self._public(session)

    @staticmethod
    def _public(session: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in session.items() if not k.startswith("_")}

    def _expire_session(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        if session["status"] != "open":
            raise StripeError(
                400,
                "invalid_request_error",
                'Only Checkout Sessions with a status in ["open"] can be expired.',
            )
        session["status"] = "expired"
        return self._public(session)

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        intent_id = params.get("payment_intent")
        if not intent_id or intent_id not in self.intents:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such payment_intent: '{intent_id}'",
                "resource_missing",
            )
        intent = self.intents[intent_id]
        if intent["status"] != "succeeded":
            raise StripeError(
                400,
                "invalid_request_error",
                "This PaymentIntent has not succeeded.",
                "payment_intent_unexpected_state",
            )
        refunded = sum(
            r["amount"]
            for r in self.refunds.values()
            if r["payment_intent"] == intent_id and r["status"] not in ("failed", "canceled")
        )
        remaining = intent["amount_received"] - refunded
        if remaining <= 0:
            raise StripeError(
                400,
                "invalid_request_error",
                "Charge has already been refunded.",
                "charge_already_refunded",
            )
        amount = _int(params["amount"], "amount") if "amount" in params else remaining
        if amount > remaining:
            raise StripeError(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                "amount_too_large",
            )
        refund = {
            "id": self._id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "status": self.refund_status,
            "metadata": params.get("metadata", {}),
            "created": int(time.time()),
        }
        self.refunds[refund["id"]] = refund
        return copy.deepcopy(refund)

    def _page(
        self, objects: list[dict[str, Any]], params: dict[str, str], url: str
    ) -> dict[str, Any]:
        """A list page as Stripe answers it: newest first, `created[...]` filters, `limit`
        (capped by max_page_size) and `starting_after`."""
        limit = min(_int(params.get("limit", "10"), "limit"), self.max_page_size)
        bounds = {
            op: _int(params[f"created[{op}]"], f"created[{op}]")
            for op in ("gt", "gte", "lt", "lte")
            if f"created[{op}]" in params
        }
        found = [
            o
            for o in objects
            if ("gt" not in bounds or o["created"] > bounds["gt"])
            and ("gte" not in bounds or o["created"] >= bounds["gte"])
            and ("lt" not in bounds or o["created"] < bounds["lt"])
            and ("lte" not in bounds or o["created"] <= bounds["lte"])
        ]
        # Newest first; among equal times, the one made later first.
        found = [o for _, o in sorted(enumerate(found), key=lambda p: (p[1]["created"], p[0]))]
        found.reverse()
        if "starting_after" in params:
            ids = [o["id"] for o in found]
            if params["starting_after"] not in ids:
                raise StripeError(
                    400,
                    "invalid_request_error",
                    f"No such object: '{params['starting_after']}'",
                    "resource_missing",
                )
            found = found[ids.index(params["starting_after"]) + 1 :]
        return {
            "object": "list",
            "data": copy.deepcopy(found[:limit]),
            "has_more": len(found) > limit,
            "url": url,
        }

    def _expand_intent(self, obj: dict[str, Any], expand: list[str]) -> None:
        """Replaces `payment_intent` (and its `latest_charge`) ids by the objects."""
        if (
            "data.payment_intent" not in expand
            and "data.payment_intent.latest_charge" not in expand
        ):
            return
        if obj.get("payment_intent"):
            intent = copy.deepcopy(self.intents[obj["payment_intent"]])
            if "data.payment_intent.latest_charge" in expand and intent["latest_charge"]:
                intent["latest_charge"] = copy.deepcopy(self.charges[intent["latest_charge"]])
            obj["payment_intent"] = intent

    def _list_refunds(self, params: dict[str, str], query: list[tuple[str, str]]) -> dict[str, Any]:
        refunds = [
            r
            for r in self.refunds.values()
            if "payment_intent" not in params or r["payment_intent"] == params["payment_intent"]
        ]
        page = self._page(refunds, params, "/v1/refunds")
        expand = [v for k, v in query if k == "expand[]"]
        for refund in page["data"]:
            self._expand_intent(refund, expand)
        return page

    def _list_intents(self, params: dict[str, str], query: list[tuple[str, str]]) -> dict[str, Any]:
        page = self._page(list(self.intents.values()), params, "/v1/payment_intents")
        if "data.latest_charge" in [v for k, v in query if k == "expand[]"]:
            for intent in page["data"]:
                if intent["latest_charge"]:
                    intent["latest_charge"] = copy.deepcopy(self.charges[intent["latest_charge"]])
        return page

    def _list_sessions(
        self, params: dict[str, str], query: list[tuple[str, str]]
    ) -> dict[str, Any]:
        sessions = [
            self._public(s)
            for s in self.sessions.values()
            if "status" not in params or s["status"] == params["status"]
        ]
        page = self._page(sessions, params, "/v1/checkout/sessions")
        expand = [v for k, v in query if k == "expand[]"]
        for session in page["data"]:
            self._expand_intent(session, expand)
        return page

    # ---- what payers and Stripe do, and the events they cause ----------------------------------

    def session_for(self, order_id: str) -> dict[str, Any]:
        [session] = [s for s in self.sessions.values() if s["client_reference_id"] == order_id]
        return session

    def _intent(
        self,
        session: dict[str, Any],
        status: str,
        amount: int | None = None,
        at: int | None = None,
    ) -> dict[str, Any]:
        if session["payment_intent"] is None:
            intent = {
                "id": self._id("pi"),
                "object": "payment_intent",
                "amount": session["amount_total"],
                "amount_received": 0,
                "currency": session["currency"],
                "metadata": copy.deepcopy(session["_intent_metadata"]),
                "status": status,
                "created": int(time.time()),
                "last_payment_error": None,
                "latest_charge": None,
            }
            self.intents[intent["id"]] = intent
            session["payment_intent"] = intent["id"]
        intent = self.intents[session["payment_intent"]]
        intent["status"] = status
        if status == "succeeded":
            self._charge(intent, session["amount_total"] if amount is None else amount, at)
        return intent

    def _charge(self, intent: dict[str, Any], amount: int, at: int | None) -> None:
        """The PaymentIntent succeeded: `amount` received by a charge made `at` (or now)."""
        intent["status"] = "succeeded"
        intent["amount_received"] = amount
        charge = {
            "id": self._id("ch"),
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "paid": True,
            "created": int(time.time()) if at is None else at,
        }
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]

    # A PaymentIntent confirmed from the merchant's page (Stripe.js with its client_secret).

    def intent_for(self, order_id: str) -> dict[str, Any]:
        """The PaymentIntent made by POST /v1/payment_intents for the order."""
        [intent] = [
            self.intents[i]
            for i in self.client_secrets.values()
            if self.intents[i]["metadata"].get("order_id") == order_id
        ]
        return intent

    def _by_secret(self, client_secret: str, *allowed: str) -> dict[str, Any]:
        """The PaymentIntent the payer's page confirms, refused as Stripe.js would be."""
        intent_id = self.client_secrets.get(client_secret)
        if intent_id is None:
            raise StripeError(
                400,
                "invalid_request_error",
                "The client_secret provided does not match any associated PaymentIntent on "
                "this account.",
                "resource_missing",
            )
        intent = self.intents[intent_id]
        if intent["status"] not in allowed:
            raise StripeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent's status is {intent['status']}",
                "payment_intent_unexpected_state",
            )
        return intent

    def confirm_intent(
        self, client_secret: str, amount: int | None = None, at: int | None = None
    ) -> dict[str, Any]:
        """The payer pays by card on the merchant's page. `amount` (minor units) stands for
        a Stripe that charged something else; `at` (unix seconds) is when (default now)."""
        intent = self._by_secret(client_secret, "requires_payment_method", "requires_action")
        intent["last_payment_error"] = None
        self._charge(intent, intent["amount"] if amount is None else amount, at)
        return self.event("payment_intent.succeeded", copy.deepcopy(intent))

    def decline_intent(self, client_secret: str) -> dict[str, Any]:
        """The payer's card is declined: Stripe hands the PaymentIntent back for another try."""
        intent = self._by_secret(client_secret, "requires_payment_method", "requires_action")
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {"code": "card_declined", "decline_code": "generic_decline"}
        return self.event("payment_intent.payment_failed", copy.deepcopy(intent))

    def process_intent(self, client_secret: str) -> dict[str, Any]:
        """The payer confirms with a delayed method (a bank debit): processing for days."""
        intent = self._by_secret(client_secret, "requires_payment_method", "requires_action")
        intent["status"] = "processing"
        return self.event("payment_intent.processing", copy.deepcopy(intent))

    def settle_intent(self, client_secret: str, succeeded: bool) -> dict[str, Any]:
        """The delayed method's outcome: paid, or failed (back to requires_payment_method)."""
        intent = self._by_secret(client_secret, "processing")
        if succeeded:
            self._charge(intent, intent["amount"], None)
            return self.event("payment_intent.succeeded", copy.deepcopy(intent))
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {"code": "payment_method_provider_decline"}
        return self.event("payment_intent.payment_failed", copy.deepcopy(intent))

    def pay(
        self, order_id: str, amount: int | None = None, at: int | None = None
    ) -> dict[str, Any]:
        """The payer pays by card: the session completes, paid. `amount` (minor units)
        stands for a Stripe that charged something else than the order; `at` (unix
        seconds) is when the charge was made (default now)."""
        session = self.session_for(order_id)
        if session["status"] != "open":
            raise AssertionError(f"session {session['id']} is {session['status']}")
        self._intent(session, "succeeded", amount, at)
        session.update(status="complete", payment_status="paid")
        return self.event("checkout.session.completed", self._public(session))

    def decline(self, order_id: str) -> dict[str, Any]:
        """A card is declined; the session stays open for another try."""
        session = self.session_for(order_id)
        intent = self._intent(session, "requires_payment_method")
        intent["last_payment_error"] = {"code": "card_declined", "decline_code": "generic_decline"}
        return self.event("payment_intent.payment_failed", copy.deepcopy(intent))

    def pay_later(self, order_id: str) -> dict[str, Any]:
        """A delayed method (bank debit): the session completes unpaid while it settles."""
        session = self.session_for(order_id)
        self._intent(session, "processing")
        session.update(status="complete", payment_status="unpaid")
        return self.event("checkout.session.completed", self._public(session))

    def settle_later(self, order_id: str, succeeded: bool) -> dict[str, Any]:
        session = self.session_for(order_id)
        if succeeded:
            self._intent(session, "succeeded")
            session["payment_status"] = "paid"
            return self.event("checkout.session.async_payment_succeeded", self._public(session))
        self._intent(session, "requires_payment_method")
        return self.event("checkout.session.async_payment_failed", self._public(session))

    def expire(self, order_id: str) -> dict[str, Any]:
        """Stripe expires the session at its expires_at."""
        session = self.session_for(order_id)
        session["status"] = "expired"
        return self.event("checkout.session.expired", self._public(session))

    def settle_refund(self, refund_id: str, status: str) -> dict[str, Any]:
        [refund] = [r for r in self.refunds.values() if r["metadata"].get("refund_id") == refund_id]
        refund["status"] = status
        return self.event("refund.updated", copy.deepcopy(refund))

    def event(self, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self._id("evt"),
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }

    # ---- signed delivery ----------------------------------------------------------------------

    def signed(
        self,
        event: dict[str, Any],
        secrets: Sequence[str] | None = None,
        timestamp: int | None = None,
    ) -> tuple[bytes, str]:
        """The raw body and its `Stripe-Signature` header, one v1 per secret."""
        body = json.dumps(event, indent=2).encode()
        t = int(time.time()) if timestamp is None else timestamp
        v1 = [
            hmac.new(s.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            for s in (self.webhook_secrets if secrets is None else secrets)
        ]
        return body, ",".join([f"t={t}", *(f"v1={sig}" for sig in v1)])

    async def send(self, event: dict[str, Any], url: str) -> httpx.Response:
        body, header = self.signed(event)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                url,
                content=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            )
