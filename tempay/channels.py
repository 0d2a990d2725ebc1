"""How a payer pays: the payer's details a channel needs, and the action the checkout answer
hands the payer.

A channel is a provider's payment product (`wechat_jsapi`, `alipay_qr`, ...). Each provider
declares its channels (providers/base.py ChannelSpec): the kind of payer action it answers
with and the payer details it needs. Everything after the create (notifications, status
queries, expiry, refunds, the book, reconciliation) is the same for every channel.

Payer details are personal data: they travel in the order (encrypted in Temporal's history
like every payload), are never a search attribute, never logged (`repr=False`), never in a
view, the book or a merchant event. A payer action is a short-lived credential for one payer
(a JSAPI signature, a Stripe client_secret): it is in the checkout answer and the workflow's
view, and never in the book.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tempay.errors import InvalidInput

# WeChat's openid: 28 characters of base64url today; documented only as "string[1,128]".
OPENID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,128}")


class PayerField(StrEnum):
    """A payer detail a channel may need; the names are the API's and the CLI's."""

    OPENID = "payer_openid"  # the payer's openid under the channel's app (WeChat JSAPI)
    CLIENT_IP = "payer_client_ip"  # the payer's own IP (WeChat H5 checks it)


PAYER_FIELD_MEANING: dict[PayerField, str] = {
    PayerField.OPENID: "the payer's openid under the channel's WeChat app",
    PayerField.CLIENT_IP: "the IP address the payer's browser connects from",
}


def parse_openid(value: str) -> str:
    if not isinstance(value, str) or not OPENID_PATTERN.fullmatch(value):
        raise InvalidInput(
            "payer_openid must be 1-128 of letters, digits, '_' or '-' (the payer's openid "
            "under the channel's app)"
        )
    return value


def parse_client_ip(value: str) -> str:
    """An IPv4 or IPv6 address as the payer's network shows it; normalised."""
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise InvalidInput(
            "payer_client_ip must be the payer's IPv4 or IPv6 address, such as 203.0.113.7"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise InvalidInput("payer_client_ip must be the payer's own address, not " + str(address))
    return address.compressed


class PayerDetails(BaseModel):
    """What a channel needs to know of the payer. Never shown in a repr, a log line, a view,
    a search attribute, the book or a merchant event."""

    model_config = ConfigDict(frozen=True)

    openid: str | None = Field(default=None, repr=False)
    client_ip: str | None = Field(default=None, repr=False)

    @field_validator("openid")
    @classmethod
    def _openid(cls, value: str | None) -> str | None:
        return None if value is None else parse_openid(value)

    @field_validator("client_ip")
    @classmethod
    def _client_ip(cls, value: str | None) -> str | None:
        return None if value is None else parse_client_ip(value)

    def get(self, field: PayerField) -> str | None:
        return self.openid if field is PayerField.OPENID else self.client_ip

    def only(self, fields: frozenset[PayerField]) -> PayerDetails | None:
        """These details without those a channel does not use (they are not kept); None
        when nothing is left."""
        kept = PayerDetails(
            openid=self.openid if PayerField.OPENID in fields else None,
            client_ip=self.client_ip if PayerField.CLIENT_IP in fields else None,
        )
        return kept if (kept.openid or kept.client_ip) else None


# Frozen; and `kind` is required in the API document (always present in an answer), as its
# discriminator must be.
ACTION_CONFIG = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)


class PayerActionKind(StrEnum):
    REDIRECT = "redirect"  # open `url` in the payer's browser
    QR_CODE = "qr_code"  # show `content` as a QR code for the payer's wallet to scan
    JSAPI = "jsapi"  # inside WeChat: WeixinJSBridge / wx.requestPayment(parameters)
    APP = "app"  # the merchant's app hands `order_string` or `parameters` to the wallet SDK
    CLIENT_SECRET = "client_secret"  # Stripe.js / Elements confirms with `client_secret`


class RedirectAction(BaseModel):
    """Send the payer's browser to `url` (also the checkout answer's `payment_url`)."""

    model_config = ACTION_CONFIG
    kind: Literal["redirect"] = "redirect"
    url: str


class QrCodeAction(BaseModel):
    """Render `content` as a QR code (also the checkout answer's `payment_url`): the payer
    scans it with the wallet app (WeChat Pay Native's code_url, Alipay's qr_code)."""

    model_config = ACTION_CONFIG
    kind: Literal["qr_code"] = "qr_code"
    content: str


class JsapiParameters(BaseModel):
    """Exactly the object WeChat's `WeixinJSBridge.invoke('getBrandWCPayRequest', ...)` and
    `wx.requestPayment(...)` take, field names included. `paySign` signs appId, timeStamp,
    nonceStr and package (one per line) with the merchant's key."""

    model_config = ConfigDict(frozen=True)
    appId: str  # noqa: N815 - WeChat's own field names, passed to the page as they are
    timeStamp: str  # noqa: N815
    nonceStr: str  # noqa: N815
    package: str  # "prepay_id=..."
    signType: str  # noqa: N815 - "RSA" (WeChat Pay v3)
    paySign: str = Field(repr=False)  # noqa: N815


class JsapiAction(BaseModel):
    """Inside WeChat (official-account page or mini-program): hand `parameters` to the
    JS bridge. There is no URL."""

    model_config = ACTION_CONFIG
    kind: Literal["jsapi"] = "jsapi"
    parameters: JsapiParameters


class AppParameters(BaseModel):
    """WeChat's APP payment: exactly what the WeChat SDK's PayReq takes. `sign` signs appid,
    timestamp, noncestr and prepayid (one per line) with the merchant's key."""

    model_config = ConfigDict(frozen=True)
    appid: str
    partnerid: str  # the merchant id
    prepayid: str
    package: str  # "Sign=WXPay"
    noncestr: str
    timestamp: str
    sign: str = Field(repr=False)


class AppAction(BaseModel):
    """The merchant's app hands this to the wallet's SDK: Alipay's signed `order_string`
    (for `payV2`), or WeChat's `parameters` (for `PayReq`). Exactly one is set."""

    model_config = ACTION_CONFIG
    kind: Literal["app"] = "app"
    order_string: str | None = Field(default=None, repr=False)  # signed: a credential
    parameters: AppParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> AppAction:
        if (self.order_string is None) == (self.parameters is None):
            raise ValueError("an app action carries an order_string or parameters (one)")
        return self


class ClientSecretAction(BaseModel):
    """The merchant's page confirms the payment with Stripe.js (`stripe.confirmPayment`,
    Payment Element) using `client_secret`. Give it to this payer only; never log it."""

    model_config = ACTION_CONFIG
    kind: Literal["client_secret"] = "client_secret"
    client_secret: str = Field(repr=False)


PayerAction = Annotated[
    RedirectAction | QrCodeAction | JsapiAction | AppAction | ClientSecretAction,
    Field(discriminator="kind"),
]


def payment_url_of(action: PayerAction | None) -> str | None:
    """The checkout answer's `payment_url`: the redirect's URL or the QR code's content;
    None for the kinds that have no URL."""
    if isinstance(action, RedirectAction):
        return action.url
    if isinstance(action, QrCodeAction):
        return action.content
    return None
