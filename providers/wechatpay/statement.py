"""WeChat Pay's daily trade bill (交易账单, API v3), read as tempay's statement lines.

Fetching it is two steps (the adapter's `statement`): `GET /v3/bill/tradebill?bill_date=
YYYY-MM-DD&bill_type=ALL&tar_type=GZIP`, a signed and verified call answering
`{"hash_type": "SHA1", "hash_value": "...", "download_url": "..."}`; then a signed GET of the
download_url. WeChat Pay does not sign the download's answer: the file is trusted only when
the SHA1 of the bill matches hash_value. The hash is over the original bill, so a GZIP
download is hashed after gunzipping (WeChat Pay: "原始账单(gzip需要解压缩)的摘要值").
`BillDownload` does both while the bytes arrive, into a temporary file, so memory stays
bounded whatever the bill's size.

The file (UTF-8, one record a line; a UTF-8 BOM is tolerated):

    交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,
    交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,
    充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,
    费率备注                                       <- header, one line in the file
    `2024-05-01 10:00:00,`wx..,`1900000109,`0,`,`4200..,`A1001,...   <- one line a record
    总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
    `2,`10.00,`3.00,`0.00,`0.06000,`10.00,`3.00     <- the totals

Every data field starts with a backtick (so spreadsheets keep long numbers as text), which
is also what separates fields: a record is split on ",`", so a comma inside a product name
does not shift the columns. Columns are found by their header name, so WeChat Pay adding
one does not break the reader.

Mapping, the one place a bill line becomes a StatementLine:
- 交易状态 SUCCESS: a payment of 订单金额 (the order's total, as tempay asked for it; 应结订单
  金额 is less by any merchant-funded coupon).
- 交易状态 REFUND: a refund of 申请退款金额 (the amount tempay asked to refund; 退款金额 is
  the settled part, less by coupons) when 退款状态 is SUCCESS; a refund still processing,
  abnormal or closed has not given money back and is not a line.
- 交易状态 REVOKED: a payment-code (micropay) trade reversed after payment; tempay makes
  none, and it moved no money: not a line.
- Amounts are yuan (Decimal, at most two places); 交易时间 is Asia/Shanghai.
- Every line's 商户号 must be tempay's mchid and its 公众账号ID one of the app ids tempay
  configures for it (official account, mini-program, mobile app), or the whole statement is
  refused (StatementError naming which): a line changes only our own trades.
"""

from __future__ import annotations

import hashlib
import tempfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import IO

from tempay.errors import StatementError
from tempay.statements import StatementLine, StatementLineKind

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
CURRENCY = "CNY"
FEN = Decimal("0.01")
HASH_TYPE = "SHA1"
# A bill larger than this (unzipped) is refused rather than filling the disk: a very busy
# merchant's day is a few hundred bytes a trade, far below it.
MAX_BILL_BYTES = 4 * 1024**3

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUMMARY_FIRST_COLUMN = "总交易单数"
SUMMARY_COLUMNS = 7

# Header names of the columns tempay reads.
TIME = "交易时间"
APPID = "公众账号ID"
MCHID = "商户号"
TRANSACTION_ID = "微信订单号"
OUT_TRADE_NO = "商户订单号"
TRADE_STATE = "交易状态"
CURRENCY_COLUMN = "货币种类"
ORDER_AMOUNT = "订单金额"
REFUND_ID = "微信退款单号"
OUT_REFUND_NO = "商户退款单号"
REFUND_AMOUNT = "申请退款金额"
REFUND_STATUS = "退款状态"
REQUIRED = (
    TIME,
    APPID,
    MCHID,
    TRANSACTION_ID,
    OUT_TRADE_NO,
    TRADE_STATE,
    CURRENCY_COLUMN,
    ORDER_AMOUNT,
    REFUND_ID,
    OUT_REFUND_NO,
    REFUND_AMOUNT,
    REFUND_STATUS,
)

# 交易状态 -> what the line is; None: not a line (see the module docstring).
TRADE_STATES: dict[str, StatementLineKind | None] = {
    "SUCCESS": StatementLineKind.PAYMENT,
    "REFUND": StatementLineKind.REFUND,
    "REVOKED": None,
}
# 退款状态 of a REFUND line: only SUCCESS gave money back.
REFUND_SETTLED = "SUCCESS"
REFUND_UNSETTLED = ("PROCESSING", "ABNORMAL", "CHANGE", "CLOSED", "REFUNDCLOSE")


class BillDownload:
    """The bill as it downloads: unzipped when asked, hashed, and written to a temporary
    file (never held in memory). `verified()` checks the hash and hands the file back."""

    def __init__(
        self, hash_type: str, hash_value: str, gzipped: bool, limit: int = MAX_BILL_BYTES
    ) -> None:
        if hash_type.upper() != HASH_TYPE:
            raise StatementError(f"wechatpay bill: unsupported hash_type {hash_type!r}")
        self._expected = hash_value.strip().lower()
        self._hash = hashlib.sha1(usedforsecurity=False)
        # wbits 16 + 15: a gzip member, header and trailer (CRC and length) checked.
        self._gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self._limit = limit
        self._size = 0
        self.file: IO[bytes] = tempfile.TemporaryFile()

    def feed(self, chunk: bytes) -> None:
        if self._gunzip is not None:
            try:
                # Bounded output per call: a small chunk cannot unzip to gigabytes at once.
                while chunk:
                    self._write(self._gunzip.decompress(chunk, 1024 * 1024))
                    chunk = self._gunzip.unconsumed_tail
            except zlib.error as exc:
                raise StatementError(f"wechatpay bill: the download is not gzip ({exc})") from None
        else:
            self._write(chunk)

    def _write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise StatementError(f"wechatpay bill: larger than {self._limit} bytes, refused")
        self._hash.update(data)
        self.file.write(data)

    def verified(self) -> IO[bytes]:
        """The bill, rewound, once complete and matching its hash; else StatementError."""
        if self._gunzip is not None:
            try:
                self._write(self._gunzip.flush())
            except zlib.error as exc:
                raise StatementError(f"wechatpay bill: the download is not gzip ({exc})") from None
            if not self._gunzip.eof:
                raise StatementError("wechatpay bill: the gzip download is truncated")
        actual = self._hash.hexdigest()
        if actual != self._expected:
            raise StatementError(
                f"wechatpay bill: hash mismatch (SHA1 {actual}, WeChat Pay announced "
                f"{self._expected or 'none'}): the file is corrupt or not WeChat Pay's"
            )
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def _fields(text: str, number: int) -> list[str]:
    """A backtick-prefixed record's fields, the backticks removed."""
    if not text.startswith("`"):
        raise StatementError(f"wechatpay bill line {number}: a record must start with '`'")
    return [field.strip() for field in text[1:].split(",`")]


def _amount(value: str, column: str, number: int) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise StatementError(
            f"wechatpay bill line {number}: {column} {value!r} is not an amount"
        ) from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(FEN):
        raise StatementError(
            f"wechatpay bill line {number}: {column} {value!r} is not yuan with at most 2 places"
        )
    return amount.quantize(FEN)


def _time(value: str, number: int) -> datetime:
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=CHINA)
    except ValueError:
        raise StatementError(
            f"wechatpay bill line {number}: {TIME} {value!r} is not YYYY-MM-DD HH:MM:SS"
        ) from None


class _Columns:
    """Where each column tempay reads sits, from the header line."""

    def __init__(self, header: str, number: int) -> None:
        names = [name.strip() for name in header.split(",")]
        missing = [name for name in REQUIRED if name not in names]
        if names[0] != TIME or missing:
            raise StatementError(
                f"wechatpay bill line {number}: not a trade bill header "
                f"(missing {', '.join(missing) or TIME + ' first'})"
            )
        self.count = len(names)
        self.index = {name: names.index(name) for name in REQUIRED}


def _record(
    fields: list[str], columns: _Columns, number: int, mchid: str, appids: frozenset[str]
) -> StatementLine | None:
    if len(fields) != columns.count:
        raise StatementError(
            f"wechatpay bill line {number}: {len(fields)} fields where the header has "
            f"{columns.count}"
        )

    def get(name: str) -> str:
        return fields[columns.index[name]]

    if get(MCHID) != mchid:
        raise StatementError(
            f"wechatpay bill line {number}: for another merchant ({MCHID} {get(MCHID)!r}, "
            f"ours is {mchid!r})"
        )
    if get(APPID) not in appids:
        raise StatementError(
            f"wechatpay bill line {number}: for another app id ({APPID} {get(APPID)!r}, "
            f"ours are {', '.join(map(repr, sorted(appids)))})"
        )
    state = get(TRADE_STATE)
    if state not in TRADE_STATES:
        raise StatementError(f"wechatpay bill line {number}: unknown {TRADE_STATE} {state!r}")
    kind = TRADE_STATES[state]
    if kind is None:
        return None
    if get(CURRENCY_COLUMN) != CURRENCY:
        raise StatementError(
            f"wechatpay bill line {number}: {CURRENCY_COLUMN} {get(CURRENCY_COLUMN)!r} is not "
            f"{CURRENCY}"
        )
    at = _time(get(TIME), number)
    order_id = get(OUT_TRADE_NO) or None
    trade_no = get(TRANSACTION_ID) or None
    if kind is StatementLineKind.PAYMENT:
        return StatementLine(
            kind=kind,
            order_id=order_id,
            provider_trade_no=trade_no,
            amount=_amount(get(ORDER_AMOUNT), ORDER_AMOUNT, number),
            currency=CURRENCY,
            at=at,
            merchant=mchid,
        )
    status = get(REFUND_STATUS)
    if status != REFUND_SETTLED:
        if status in REFUND_UNSETTLED:
            return None
        raise StatementError(f"wechatpay bill line {number}: unknown {REFUND_STATUS} {status!r}")
    if not get(OUT_REFUND_NO) or not get(REFUND_ID):
        raise StatementError(
            f"wechatpay bill line {number}: a refund without {OUT_REFUND_NO} or {REFUND_ID}"
        )
    return StatementLine(
        kind=kind,
        order_id=order_id,
        provider_trade_no=trade_no,
        refund_id=get(OUT_REFUND_NO),
        provider_refund_no=get(REFUND_ID),
        amount=_amount(get(REFUND_AMOUNT), REFUND_AMOUNT, number),
        currency=CURRENCY,
        at=at,
        merchant=mchid,
    )


def _summary(fields: list[str], number: int) -> None:
    """The totals line: checked for form only (the hash vouches for the content)."""
    if len(fields) != SUMMARY_COLUMNS:
        raise StatementError(
            f"wechatpay bill line {number}: the totals have {len(fields)} fields, not "
            f"{SUMMARY_COLUMNS}"
        )
    if not fields[0].isdigit():
        raise StatementError(f"wechatpay bill line {number}: {SUMMARY_FIRST_COLUMN} is not a count")
    for value in fields[1:]:
        try:
            Decimal(value)
        except InvalidOperation:
            raise StatementError(
                f"wechatpay bill line {number}: total {value!r} is not an amount"
            ) from None


def read_tradebill(bill: IO[bytes], mchid: str, appids: frozenset[str]) -> Iterator[StatementLine]:
    """The bill's statement lines, read one line at a time. Raises StatementError, naming
    the line, for anything that is not a trade bill of this merchant and app id.

    The (seekable) file is read twice: once to check every line, then to yield them, so a
    bad line near the end is refused before the caller has acted on any line."""
    check_tradebill(bill, mchid, appids)
    yield from tradebill_lines(bill, mchid, appids)


def check_tradebill(bill: IO[bytes], mchid: str, appids: frozenset[str]) -> None:
    """Reads the whole bill as `tradebill_lines` would, and rewinds it."""
    for _ in tradebill_lines(bill, mchid, appids):
        pass
    bill.seek(0)


def tradebill_lines(bill: IO[bytes], mchid: str, appids: frozenset[str]) -> Iterator[StatementLine]:
    """The lines as they are read: a bad line raises only once the ones before it are out
    (`read_tradebill` checks first)."""
    if not isinstance(appids, frozenset) or not appids:
        # A str here would match any substring of an app id: refuse it outright.
        raise TypeError("appids must be a non-empty frozenset of app ids")
    return _read(bill, mchid, appids)


def _read(bill: IO[bytes], mchid: str, appids: frozenset[str]) -> Iterator[StatementLine]:
    columns: _Columns | None = None
    in_summary = totals_seen = False
    for number, raw in enumerate(bill, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StatementError(f"wechatpay bill line {number}: not UTF-8") from None
        text = text.removeprefix("\ufeff").rstrip("\r\n")
        if not text.strip():
            continue
        if columns is None:
            columns = _Columns(text, number)
        elif text.startswith(SUMMARY_FIRST_COLUMN):
            if in_summary:
                raise StatementError(f"wechatpay bill line {number}: a second totals header")
            in_summary = True
        elif in_summary:
            if totals_seen:
                raise StatementError(f"wechatpay bill line {number}: a line after the totals")
            _summary(_fields(text, number), number)
            totals_seen = True
        else:
            line = _record(_fields(text, number), columns, number, mchid, appids)
            if line is not None:
                yield line
    if columns is None:
        raise StatementError("wechatpay bill: empty (no header)")
    if not totals_seen:
        raise StatementError("wechatpay bill: no totals at the end (truncated?)")
