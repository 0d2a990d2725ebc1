"""Alipay's trade bill (业务明细, `bill_type=trade`): fetched, read as `StatementLine`s, and
written.

Alipay and the sandbox (which serves its statement in Alipay's layout) fetch and read it here
(`download_bill` to a file, then `stream_trade_bill`); the sandbox server and the test fakes
write it here (`write_trade_bill`), so every side agrees on one layout.

The layout, as Alipay documents it for alipay.data.dataservice.bill.downloadurl.query
(one day, the merchant's account, Beijing time):

    A zip, `{account}_{yyyymmdd}.csv.zip`, holding two CSV files encoded GBK:

    `{account}_{yyyymmdd}_业务明细.csv`, the details, line by line:
        #支付宝业务明细查询
        #账号：[20881234567890120156]
        #起始日期：[2024年01月02日 00:00:00]   终止日期：[2024年01月03日 00:00:00]
        #-----------------------------------------业务明细列表----------------------------------------
        支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,
            对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,
            商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,
            退款批次号/请求号,服务费（元）,分润（元）,备注          (one line)
        2024010222001412340000000001\t,A1001\t,交易\t,咖啡\t,2024-01-02 10:00:00,
            2024-01-02 10:00:05,...,10.00,10.00,...                (one row per trade)
        2024010222001412340000000001\t,A1001\t,退款\t,咖啡\t,...,-4.00,-4.00,...,R1\t,...
        #-----------------------------------------业务明细列表结束------------------------------------
        #交易合计：1笔，商家实收共10.00元，商家优惠共0.00元
        #退款合计：1笔，商家实收退款共-4.00元，商家优惠退款共0.00元
        #导出时间：[2024年01月03日 09:12:01]

    `{account}_{yyyymmdd}_业务明细(汇总).csv`, the day's totals (not read here).

- 业务类型 is 交易 (a payment) or 退款 (a refund). A refund row names the trade it gives money
  back on (支付宝交易号, 商户订单号) and the merchant's refund request number (退款批次号/请求号,
  out_request_no); its amounts are negative.
- Amounts are yuan with two places; 订单金额 is the line's amount (a refund's, negated).
  创建时间 and 完成时间 are Beijing time, `YYYY-MM-DD HH:MM:SS`; 完成时间 is when it settled.
- Alipay pads values with a trailing tab (so spreadsheets keep long numbers as text):
  every field is stripped.
- 账号 is the merchant's account: its PID (2088 and twelve digits), sometimes followed by a
  four-digit account suffix (0156: the CNY account).
- Alipay writes the member names in GBK without zip's UTF-8 flag; they are read either way.

The sandbox serves trades in other currencies too: its rows then carry `币种:USD` in 备注
(`currencies_in_remarks=True` reads it). Alipay's own trade bill is CNY only.

Reading is streamed: one line at a time from the zip member, never the whole file in memory,
and a line longer than MAX_LINE_CHARS is refused. `stream_trade_bill` reads the file twice,
checking it whole before giving its first line. Anything that cannot be trusted raises
StatementError naming the line: a malformed row, a bad amount or time, another merchant's
account, another day, an unknown 业务类型, or a file cut short (no end line, or totals that
do not match the rows read).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import zipfile
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from itertools import islice
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import httpx

from tempay.domain import MINOR_UNITS, format_amount
from tempay.errors import ProviderError, ProviderRejected, StatementError
from tempay.statements import StatementLine, StatementLineKind

# Alipay's (and the sandbox's) day.
CHINA = ZoneInfo("Asia/Shanghai")
ENCODING = "gbk"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
HEADER_TIME_FORMAT = "%Y年%m月%d日 %H:%M:%S"
MAX_LINE_CHARS = 64 * 1024
# A bill larger than this is refused rather than written to disk.
MAX_BILL_BYTES = 1024 * 1024 * 1024
# Lines handed from the reading thread to the event loop at a time.
BATCH_LINES = 500

COLUMNS = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
KINDS = {"交易": StatementLineKind.PAYMENT, "退款": StatementLineKind.REFUND}
_KIND_NAMES = {kind: name for name, kind in KINDS.items()}

DETAILS_SUFFIX = "_业务明细.csv"
SUMMARY_SUFFIX = "_业务明细(汇总).csv"
DETAILS_TITLE = "#支付宝业务明细查询"
SUMMARY_TITLE = "#支付宝业务汇总查询"
LIST_START = "#" + "-" * 41 + "业务明细列表" + "-" * 40
LIST_END = "#" + "-" * 41 + "业务明细列表结束" + "-" * 36
REMARK_CURRENCY = "币种:"

_ACCOUNT = re.compile(r"#账号[：:]\s*\[([^\]]*)\]")
_PERIOD = re.compile(r"#起始日期[：:]\s*\[([^\]]*)\]\s*终止日期[：:]\s*\[([^\]]*)\]")
_TOTAL = re.compile(r"#(交易|退款)合计[：:]\s*(\d+)\s*笔")
_PID = re.compile(r"2088\d{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The Beijing-time day as [start, end), timezone-aware."""
    start = datetime.combine(day, time(), CHINA)
    return start, datetime.combine(day + timedelta(days=1), time(), CHINA)


def same_account(found: str, expected: str) -> bool:
    """The bill's 账号 is the expected account, or that PID with its account suffix."""
    if found == expected:
        return True
    suffixed = re.fullmatch(re.escape(expected) + r"\d{4}", found)
    return bool(_PID.fullmatch(expected) and suffixed)


# Reading


@dataclass
class _Reading:
    """What the header said and what the rows added up to, checked as the file goes."""

    expected_account: str | None
    day: date | None
    account: str | None = None
    period_seen: bool = False
    columns_seen: bool = False
    ended: bool = False
    counts: dict[StatementLineKind, int] = field(
        default_factory=lambda: {kind: 0 for kind in StatementLineKind}
    )


def parse_trade_bill(
    source: str | Path | IO[bytes],
    *,
    expected_account: str | None = None,
    day: date | None = None,
    currencies_in_remarks: bool = False,
) -> Generator[StatementLine, None, None]:
    """The zipped trade bill's lines, one `StatementLine` per 交易 or 退款 row, streamed.

    `expected_account`: the merchant's account (PID); a bill for another raises. `day`: the
    Beijing day asked for; a bill for another raises. Raises StatementError (with the line
    number) for anything malformed; the lines already yielded are then not to be trusted."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise StatementError(f"trade bill is not a readable zip ({exc})") from None
    with archive:
        member = _details_member(archive)
        try:
            with (
                archive.open(member) as raw,
                io.TextIOWrapper(raw, encoding=ENCODING, newline="") as text,
            ):
                yield from _read_details(
                    text,
                    _Reading(expected_account, day),
                    currencies_in_remarks=currencies_in_remarks,
                )
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            # A CRC mismatch or a member cut short shows only once it is read.
            raise StatementError(f"trade bill zip is damaged ({exc})") from None


async def stream_trade_bill(
    path: Path,
    *,
    expected_account: str | None = None,
    day: date | None = None,
    currencies_in_remarks: bool = False,
) -> AsyncIterator[StatementLine]:
    """`parse_trade_bill` for async code, in two passes over the file: the whole bill is
    checked first, so that no line of a bill that turns out malformed, cut short or someone
    else's is ever given; then its lines are read again and given. Both passes run in a
    worker thread, a batch of lines at a time, so the event loop never waits on the disk or
    the decompression."""
    read = partial(
        parse_trade_bill,
        path,
        expected_account=expected_account,
        day=day,
        currencies_in_remarks=currencies_in_remarks,
    )
    await asyncio.to_thread(lambda: deque(read(), maxlen=0))
    lines = read()
    try:
        while batch := await asyncio.to_thread(lambda: list(islice(lines, BATCH_LINES))):
            for line in batch:
                yield line
    finally:
        lines.close()


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as written: Alipay writes GBK names without the UTF-8 flag, which
    zipfile decodes as cp437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode(ENCODING)
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _details_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    names = {info: _member_name(info) for info in archive.infolist()}
    details = [info for info, name in names.items() if name.endswith(DETAILS_SUFFIX)]
    if len(details) != 1:
        listed = ", ".join(names.values()) or "none"
        raise StatementError(
            f"trade bill zip must hold one *{DETAILS_SUFFIX} file, found {len(details)} "
            f"(members: {listed})"
        )
    return details[0]


def _read_details(
    text: IO[str], reading: _Reading, *, currencies_in_remarks: bool
) -> Iterator[StatementLine]:
    number = 0
    while True:
        number += 1
        try:
            raw = text.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError:
            raise StatementError(f"trade bill line {number}: not GBK text") from None
        if not raw:
            break
        if len(raw) > MAX_LINE_CHARS and not raw.endswith("\n"):
            raise StatementError(f"trade bill line {number}: longer than {MAX_LINE_CHARS} chars")
        line = raw.rstrip("\r\n")
        if line.startswith("#"):
            _comment(line, number, reading)
        elif not line.strip():
            continue
        elif reading.ended:
            raise StatementError(f"trade bill line {number}: a row after the end of the list")
        elif not reading.columns_seen:
            _column_header(line, number, reading)
        else:
            yield _row(line, number, reading, currencies_in_remarks)
    if not reading.columns_seen:
        raise StatementError("trade bill has no column header row: not a 业务明细 file")
    if not reading.ended:
        raise StatementError(
            f"trade bill cut short: no 业务明细列表结束 line after line {number - 1}"
        )


def _comment(line: str, number: int, reading: _Reading) -> None:
    """Header and summary lines: the account and the day are checked, the totals compared
    with the rows read; any other comment is skipped."""
    if match := _ACCOUNT.match(line):
        reading.account = match.group(1).strip()
        expected = reading.expected_account
        if expected is not None and not same_account(reading.account, expected):
            raise StatementError(
                f"trade bill line {number}: the bill is for account {reading.account!r}, "
                f"not this merchant's {expected!r}"
            )
    elif match := _PERIOD.match(line):
        try:
            start = datetime.strptime(match.group(1).strip(), HEADER_TIME_FORMAT)
        except ValueError:
            raise StatementError(
                f"trade bill line {number}: 起始日期 {match.group(1)!r} is not "
                "'YYYY年MM月DD日 HH:MM:SS'"
            ) from None
        reading.period_seen = True
        if reading.day is not None and start.date() != reading.day:
            raise StatementError(
                f"trade bill line {number}: the bill is for {start.date()}, not {reading.day}"
            )
    elif "业务明细列表结束" in line:
        reading.ended = True
    elif match := _TOTAL.match(line):
        kind = KINDS[match.group(1)]
        stated = int(match.group(2))
        if stated != reading.counts[kind]:
            raise StatementError(
                f"trade bill line {number}: {match.group(1)}合计 says {stated} rows, the bill "
                f"has {reading.counts[kind]}"
            )


def _column_header(line: str, number: int, reading: _Reading) -> None:
    if reading.expected_account is not None and reading.account is None:
        raise StatementError(
            f"trade bill line {number}: no #账号 line before the rows: whose bill it is "
            "cannot be checked"
        )
    if reading.day is not None and not reading.period_seen:
        raise StatementError(
            f"trade bill line {number}: no #起始日期 line before the rows: which day it is "
            "cannot be checked"
        )
    columns = tuple(name.strip() for name in _fields(line, number))
    if columns != COLUMNS:
        raise StatementError(
            f"trade bill line {number}: unexpected column header "
            f"({len(columns)} columns, expected the {len(COLUMNS)} of 业务明细)"
        )
    reading.columns_seen = True


def _fields(line: str, number: int) -> list[str]:
    try:
        return next(csv.reader([line]))
    except (csv.Error, StopIteration) as exc:
        raise StatementError(f"trade bill line {number}: not a CSV row ({exc})") from None


def _row(line: str, number: int, reading: _Reading, currencies_in_remarks: bool) -> StatementLine:
    fields = [value.strip() for value in _fields(line, number)]
    if len(fields) != len(COLUMNS):
        raise StatementError(
            f"trade bill line {number}: {len(fields)} columns, expected {len(COLUMNS)}"
        )

    def column(name: str) -> str:
        return fields[_INDEX[name]]

    kind_name = column("业务类型")
    kind = KINDS.get(kind_name)
    if kind is None:
        raise StatementError(
            f"trade bill line {number}: 业务类型 {kind_name!r} is neither 交易 nor 退款"
        )
    currency = "CNY"
    remark = column("备注")
    if currencies_in_remarks and remark.startswith(REMARK_CURRENCY):
        currency = remark.removeprefix(REMARK_CURRENCY).strip().upper()
        if currency not in MINOR_UNITS:
            raise StatementError(f"trade bill line {number}: unknown currency {currency!r}")
    amount = _amount(column("订单金额（元）"), number, currency)
    if (kind is StatementLineKind.PAYMENT) != (amount > 0):
        sign = "positive" if kind is StatementLineKind.PAYMENT else "negative"
        raise StatementError(
            f"trade bill line {number}: a {kind_name} row's 订单金额 must be {sign}, not {amount}"
        )
    trade_no = column("支付宝交易号")
    if not trade_no:
        raise StatementError(f"trade bill line {number}: no 支付宝交易号")
    refund_id = column("退款批次号/请求号") or None
    if kind is StatementLineKind.REFUND and refund_id is None:
        raise StatementError(f"trade bill line {number}: a 退款 row without 退款批次号/请求号")
    reading.counts[kind] += 1
    return StatementLine(
        kind=kind,
        order_id=column("商户订单号") or None,
        provider_trade_no=trade_no,
        refund_id=refund_id if kind is StatementLineKind.REFUND else None,
        amount=abs(amount),
        currency=currency,
        at=_time(column("完成时间"), "完成时间", number),
        merchant=reading.account,
    )


def _amount(text: str, number: int, currency: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise StatementError(
            f"trade bill line {number}: 订单金额 {text!r} is not an amount"
        ) from None
    if not amount.is_finite() or amount == 0:
        raise StatementError(f"trade bill line {number}: 订单金额 {text!r} is not an amount")
    if amount.as_tuple().exponent < -MINOR_UNITS[currency]:  # type: ignore[operator]
        raise StatementError(
            f"trade bill line {number}: 订单金额 {text!r} has more places than {currency} has"
        )
    return amount


def _time(text: str, name: str, number: int) -> datetime:
    # The shape first, then fromisoformat: strptime would cost as much as the rest of a row.
    try:
        if not _TIME.fullmatch(text):
            raise ValueError(text)
        return datetime.fromisoformat(text).replace(tzinfo=CHINA)
    except ValueError:
        raise StatementError(
            f"trade bill line {number}: {name} {text!r} is not 'YYYY-MM-DD HH:MM:SS'"
        ) from None


# Fetching (the adapters)


async def download_bill(
    client: httpx.AsyncClient,
    url: str,
    what: str,
    target: Path,
    *,
    max_bytes: int = MAX_BILL_BYTES,
) -> None:
    """GET the bill at `url` into the file `target`, streamed: never whole in memory.

    Raises ProviderError when it cannot be fetched now (unreachable, no answer, a 5xx: try
    again later), ProviderRejected for any other answer but 200 (with the start of its
    body), and StatementError for a bill over `max_bytes`. `what` names the call in errors."""
    try:
        async with client.stream("GET", url) as response:
            if response.status_code >= 500:
                raise ProviderError(f"{what}: HTTP {response.status_code}")
            if response.status_code != 200:
                body = await _start_of(response)
                raise ProviderRejected(f"{what}: HTTP {response.status_code} {body}".strip())
            size = 0
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise StatementError(f"{what}: the bill is over {max_bytes} bytes")
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise ProviderError(f"{what}: no bill ({type(exc).__name__}: {exc})") from exc


async def _start_of(response: httpx.Response, limit: int = 500) -> str:
    """The first `limit` bytes of an error answer, as text: enough to say why."""
    start = b""
    async for chunk in response.aiter_bytes():
        start += chunk
        if len(start) >= limit:
            break
    return start[:limit].decode("utf-8", errors="replace")


# Writing (the sandbox server and the test fakes)


@dataclass(frozen=True)
class BillEntry:
    """One row to write: the line, and what the bill shows beside it."""

    line: StatementLine
    subject: str = ""
    created_at: datetime | None = None  # defaults to the line's `at`


def write_trade_bill(
    target: str | Path | IO[bytes],
    entries: Iterable[BillEntry],
    *,
    account: str,
    day: date,
    exported_at: datetime | None = None,
) -> None:
    """Write the day's bill in Alipay's layout (above) to `target`, streaming `entries`.
    Lines in a currency other than CNY carry `币种:XXX` in 备注 (the sandbox's extension)."""
    exported = (exported_at or datetime.now(CHINA)).astimezone(CHINA)
    start, end = day_bounds(day)
    stem = f"{account}_{day:%Y%m%d}"
    header = [
        f"#账号：[{account}]",
        f"#起始日期：[{start:{HEADER_TIME_FORMAT}}]   终止日期：[{end:{HEADER_TIME_FORMAT}}]",
    ]
    counts = {kind: 0 for kind in StatementLineKind}
    totals = {kind: Decimal(0) for kind in StatementLineKind}
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with (
            archive.open(stem + DETAILS_SUFFIX, "w") as raw,
            io.TextIOWrapper(raw, encoding=ENCODING, errors="replace", newline="") as text,
        ):
            rows = csv.writer(text, lineterminator="\r\n")
            text.write("\r\n".join([DETAILS_TITLE, *header, LIST_START]) + "\r\n")
            rows.writerow(COLUMNS)
            for entry in entries:
                line = entry.line
                counts[line.kind] += 1
                totals[line.kind] += line.amount
                rows.writerow(_bill_row(entry))
            text.write(
                "\r\n".join(
                    [
                        LIST_END,
                        f"#交易合计：{counts[StatementLineKind.PAYMENT]}笔，商家实收共"
                        f"{totals[StatementLineKind.PAYMENT]:.2f}元，商家优惠共0.00元",
                        f"#退款合计：{counts[StatementLineKind.REFUND]}笔，商家实收退款共"
                        f"{-totals[StatementLineKind.REFUND]:.2f}元，商家优惠退款共0.00元",
                        f"#导出时间：[{exported:{HEADER_TIME_FORMAT}}]",
                    ]
                )
                + "\r\n"
            )
        archive.writestr(
            stem + SUMMARY_SUFFIX,
            _summary(header, counts, totals, exported).encode(ENCODING),
        )


def _bill_row(entry: BillEntry) -> list[str]:
    line = entry.line
    signed = line.amount if line.kind is StatementLineKind.PAYMENT else -line.amount
    amount = format_amount(signed, line.currency) if line.currency in MINOR_UNITS else str(signed)
    created = (entry.created_at or line.at).astimezone(CHINA)
    values = {
        "支付宝交易号": (line.provider_trade_no or "") + "\t",
        "商户订单号": (line.order_id or "") + "\t",
        "业务类型": _KIND_NAMES[line.kind] + "\t",
        # No line breaks inside a row: the reader takes one line per row.
        "商品名称": " ".join(entry.subject.split()) + "\t",
        "创建时间": f"{created:{TIME_FORMAT}}",
        "完成时间": f"{line.at.astimezone(CHINA):{TIME_FORMAT}}",
        "对方账户": "\t",
        "订单金额（元）": amount,
        "商家实收（元）": amount,
        "退款批次号/请求号": (line.refund_id or "") + "\t",
        "备注": "" if line.currency == "CNY" else REMARK_CURRENCY + line.currency,
    }
    zero = "0.00"
    money = {name for name in COLUMNS if name.endswith("（元）")}
    return [values.get(name, zero if name in money else "\t") for name in COLUMNS]


def _summary(
    header: list[str],
    counts: dict[StatementLineKind, int],
    totals: dict[StatementLineKind, Decimal],
    exported: datetime,
) -> str:
    paid, refunded = totals[StatementLineKind.PAYMENT], totals[StatementLineKind.REFUND]
    rows = [
        SUMMARY_TITLE,
        *header,
        "#" + "-" * 41 + "业务汇总列表" + "-" * 40,
        "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,"
        "支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）",
        f"合计,,{counts[StatementLineKind.PAYMENT]},{counts[StatementLineKind.REFUND]},"
        f"{paid - refunded:.2f},{paid - refunded:.2f},0.00,0.00,0.00,0.00,0.00,"
        f"{paid - refunded:.2f}",
        "#" + "-" * 41 + "业务汇总列表结束" + "-" * 36,
        f"#导出时间：[{exported:{HEADER_TIME_FORMAT}}]",
    ]
    return "\r\n".join(rows) + "\r\n"
