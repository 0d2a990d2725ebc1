"""WeChat Pay's trade bill as tempay's statement: the reader against a sample in the
documented layout, the download's hash and gzip, and the adapter's `statement` against the
fake WeChat Pay API over real HTTP (every request signed, the tradebill answer verified)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import WechatPayConfig
from providers.wechatpay.statement import BillDownload, read_tradebill
from tempay.domain import PaymentOrder, RefundRequest
from tempay.errors import ProviderError, ProviderRefused, StatementError
from tempay.statements import StatementLine, StatementLineKind
from tests.support.fakes.wechatpay_api import BILL_HEADER, BILL_SUMMARY_HEADER, FakeWechatPay
from tests.support.providers.wechatpay import APP_APPID, APPID, MCHID, MINIPROGRAM_APPID

CHINA = timezone(timedelta(hours=8))
DAY = date(2024, 5, 1)

# A bill as WeChat Pay documents it: a header, backtick-prefixed records (a payment whose
# product name holds a comma, a settled refund, a refund still processing, a revoked
# payment-code trade), the totals header and the totals.
SAMPLE = "\r\n".join(
    [
        BILL_HEADER,
        f"`2024-05-01 09:15:02,`{APPID},`{MCHID},`0,`,`4200000001202405011234567890,`A1001,"
        "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`12.34,`0.00,`0,`0,"
        "`0.00,`0.00,`,`,`拿铁,大杯,`,`0.07404,`0.60%,`12.34,`0.00,`",
        f"`2024-05-01 11:00:00,`{APPID},`{MCHID},`0,`,`4200000002202405011234567890,`A1002,"
        "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`CMB_CREDIT,`CNY,`5.00,`0.00,`0,`0,"
        "`0.00,`0.00,`,`,`茶,`,`0.03000,`0.60%,`5.00,`0.00,`",
        f"`2024-05-01 18:30:00,`{APPID},`{MCHID},`0,`,`4200000001202405011234567890,`A1001,"
        "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
        "`50300000012024050112345678901,`R1001,`3.00,`0.00,`ORIGINAL,`SUCCESS,`拿铁,大杯,`,"
        "`-0.01800,`0.60%,`0.00,`3.00,`",
        f"`2024-05-01 19:00:00,`{APPID},`{MCHID},`0,`,`4200000002202405011234567890,`A1002,"
        "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
        "`50300000022024050112345678901,`R1002,`1.00,`0.00,`ORIGINAL,`PROCESSING,`茶,`,"
        "`-0.00600,`0.60%,`0.00,`1.00,`",
        f"`2024-05-01 20:00:00,`{APPID},`{MCHID},`0,`,`4200000003202405011234567890,`P1003,"
        "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`MICROPAY,`REVOKED,`OTHERS,`CNY,`0.00,`0.00,`0,`0,"
        "`0.00,`0.00,`,`,`饼干,`,`0.00000,`0.60%,`1.00,`0.00,`",
        BILL_SUMMARY_HEADER,
        "`5,`17.34,`4.00,`0.00,`0.07804,`18.34,`4.00",
        "",
    ]
).encode("utf-8")


OURS = frozenset({APPID, MINIPROGRAM_APPID, APP_APPID})


def read(content: bytes, mchid: str = MCHID, appids: frozenset[str] = OURS) -> list[StatementLine]:
    return list(read_tradebill(io.BytesIO(content), mchid, appids))


def line_of(content: bytes, number: int) -> str:
    return content.decode("utf-8").split("\r\n")[number - 1]


def replace_line(content: bytes, number: int, text: str) -> bytes:
    lines = content.decode("utf-8").split("\r\n")
    lines[number - 1] = text
    return "\r\n".join(lines).encode("utf-8")


# The reader


def test_the_documented_layout_becomes_statement_lines() -> None:
    first, second, refund = read(SAMPLE)
    assert first == StatementLine(
        kind=StatementLineKind.PAYMENT,
        order_id="A1001",
        provider_trade_no="4200000001202405011234567890",
        amount=Decimal("12.34"),
        currency="CNY",
        at=datetime(2024, 5, 1, 9, 15, 2, tzinfo=CHINA),
        merchant=MCHID,
    )
    assert (second.order_id, second.amount) == ("A1002", Decimal("5.00"))
    assert refund == StatementLine(
        kind=StatementLineKind.REFUND,
        order_id="A1001",
        provider_trade_no="4200000001202405011234567890",
        refund_id="R1001",
        provider_refund_no="50300000012024050112345678901",
        amount=Decimal("3.00"),
        currency="CNY",
        at=datetime(2024, 5, 1, 18, 30, tzinfo=CHINA),
        merchant=MCHID,
    )
    # Backticks gone, money exact, times in Shanghai and aware.
    assert isinstance(first.amount, Decimal) and str(first.amount) == "12.34"
    assert first.at.utcoffset() == timedelta(hours=8)


def test_a_bom_and_lf_line_ends_are_read_too() -> None:
    assert read(b"\xef\xbb\xbf" + SAMPLE.replace(b"\r\n", b"\n")) == read(SAMPLE)


@pytest.mark.parametrize(
    ("mchid", "appids", "match"),
    [
        ("1900000999", OURS, r"line 2: for another merchant \(商户号 '1900000109'"),
        (MCHID, frozenset({"wx0000000000000000"}), r"line 2: for another app id \(公众账号ID"),
        # Our mini-program and app ids alone: the official account's lines are not ours.
        (MCHID, OURS - {APPID}, r"line 2: for another app id \(公众账号ID 'wxd678efh567hg6787'"),
    ],
)
def test_a_bill_for_another_merchant_or_app_is_refused(
    mchid: str, appids: frozenset[str], match: str
) -> None:
    with pytest.raises(StatementError, match=match):
        read(SAMPLE, mchid, appids)


def test_lines_of_each_of_our_app_ids_are_ours_and_no_other() -> None:
    # One bill, lines of the official account, the mini-program and the app: all ours.
    mixed = replace_line(SAMPLE, 3, line_of(SAMPLE, 3).replace(APPID, MINIPROGRAM_APPID))
    mixed = replace_line(mixed, 4, line_of(mixed, 4).replace(APPID, APP_APPID))
    assert [line.order_id for line in read(mixed)] == ["A1001", "A1002", "A1001"]
    assert read(mixed) == read(SAMPLE)
    # The same bill with one line of an app id we do not configure: refused whole.
    foreign = replace_line(mixed, 5, line_of(mixed, 5).replace(APPID, "wx00000000000000aa"))
    with pytest.raises(StatementError, match=r"line 5: for another app id .*'wx00000000000000aa'"):
        read(foreign)


@pytest.mark.parametrize("appids", [APPID, "", frozenset()])
def test_app_ids_are_a_set_never_a_string(appids: object) -> None:
    # "wxd678" in "wxd678efh567hg6787" is True for a str: a str would take a prefix for ours.
    with pytest.raises(TypeError, match="frozenset"):
        read(SAMPLE, MCHID, appids)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "text", "match"),
    [
        (3, "2024-05-01 11:00:00,wx,1900000109", "line 3: a record must start with '`'"),
        (3, "`2024-05-01 11:00:00,`x", "line 3: 2 fields where the header has 27"),
        (8, "`5,`17.34", "line 8: the totals have 2 fields"),
        (1, "交易时间,商户号", "line 1: not a trade bill header"),
    ],
)
def test_a_malformed_line_is_refused_with_its_number(number: int, text: str, match: str) -> None:
    with pytest.raises(StatementError, match=match):
        read(replace_line(SAMPLE, number, text))


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("`0.60%,`12.34", "`0.60%,`12.345", "line 2: 订单金额 '12.345' is not yuan"),
        ("`0.60%,`12.34", "`0.60%,`abc", "line 2: 订单金额 'abc' is not an amount"),
        ("`2024-05-01 09:15:02", "`2024/05/01 09:15", "line 2: 交易时间 '2024/05/01 09:15'"),
        ("`CNY,`12.34", "`USD,`12.34", "line 2: 货币种类 'USD' is not CNY"),
        ("`NATIVE,`SUCCESS", "`NATIVE,`NOTPAY", "line 2: unknown 交易状态 'NOTPAY'"),
        ("`PROCESSING", "`WHATEVER", "line 5: unknown 退款状态 'WHATEVER'"),
    ],
)
def test_a_malformed_field_is_refused_with_its_line(old: str, new: str, match: str) -> None:
    with pytest.raises(StatementError, match=match):
        read(SAMPLE.decode().replace(old, new, 1).encode())


def test_not_utf8_is_refused_with_its_line() -> None:
    with pytest.raises(StatementError, match="line 3: not UTF-8"):
        read(replace_line(SAMPLE, 3, "@@@").replace(b"@@@", b"`\xff\xfe"))


def test_a_bill_without_its_totals_is_refused() -> None:
    truncated = b"\r\n".join(SAMPLE.split(b"\r\n")[:4])
    with pytest.raises(StatementError, match="no totals"):
        read(truncated)
    with pytest.raises(StatementError, match="empty"):
        read(b"")
    with pytest.raises(StatementError, match="line 9: a line after the totals"):
        read(SAMPLE + b"`1,`1.00,`0.00,`0.00,`0.0,`1.00,`0.00\r\n")


def test_a_bad_last_line_is_refused_before_any_line_is_given() -> None:
    # Lines are checked first, so a caller never acts on half of a statement it must refuse.
    lines = read_tradebill(io.BytesIO(replace_line(SAMPLE, 6, "`broken")), MCHID, OURS)
    with pytest.raises(StatementError, match="line 6"):
        next(lines)


# The download: hash and gzip


def download_of(content: bytes, gzipped: bool, hash_value: str | None = None) -> bytes:
    download = BillDownload("SHA1", hash_value or hashlib.sha1(content).hexdigest(), gzipped)
    body = gzip.compress(content) if gzipped else content
    try:
        for start in range(0, len(body), 7):  # small chunks, as a network delivers them
            download.feed(body[start : start + 7])
        return download.verified().read()
    finally:
        download.close()


@pytest.mark.parametrize("gzipped", [False, True])
def test_the_download_is_checked_against_the_hash_of_the_bill(gzipped: bool) -> None:
    assert download_of(SAMPLE, gzipped) == SAMPLE


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_hash_mismatch_is_refused(gzipped: bool) -> None:
    with pytest.raises(StatementError, match="hash mismatch"):
        download_of(SAMPLE, gzipped, hashlib.sha1(b"another bill").hexdigest())


def test_a_download_that_is_not_gzip_or_cut_short_is_refused() -> None:
    download = BillDownload("SHA1", "0" * 40, gzipped=True)
    with pytest.raises(StatementError, match="not gzip"):
        download.feed(SAMPLE)
    download.close()
    download = BillDownload("SHA1", hashlib.sha1(SAMPLE).hexdigest(), gzipped=True)
    download.feed(gzip.compress(SAMPLE)[:-12])
    with pytest.raises(StatementError, match="truncated"):
        download.verified()
    download.close()


def test_an_unknown_hash_type_or_an_oversized_bill_is_refused() -> None:
    with pytest.raises(StatementError, match="unsupported hash_type 'MD5'"):
        BillDownload("MD5", "0", gzipped=False)
    download = BillDownload("SHA1", "0" * 40, gzipped=True, limit=1000)
    with pytest.raises(StatementError, match="larger than 1000 bytes"):
        download.feed(gzip.compress(b"0" * 100_000))  # a small zip that unzips large
    download.close()


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
def test_a_100000_line_bill_is_read_with_bounded_memory(tmp_path: Path) -> None:
    record = (
        "`2024-05-01 09:15:02,`{appid},`{mchid},`0,`,`42000000012024050{n:011d},`A{n:08d},"
        "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,"
        "`0.00,`0.00,`,`,`拿铁,`,`0.00600,`0.60%,`1.00,`0.00,`\r\n"
    )
    path = tmp_path / "bill.csv"
    with path.open("w", encoding="utf-8", newline="") as bill:
        bill.write(BILL_HEADER + "\r\n")
        for n in range(100_000):
            bill.write(record.format(appid=APPID, mchid=MCHID, n=n))
        bill.write(BILL_SUMMARY_HEADER + "\r\n")
        bill.write("`100000,`100000.00,`0.00,`0.00,`600.00000,`100000.00,`0.00\r\n")
    assert path.stat().st_size > 20_000_000
    # Resident memory sampled as the lines come (tracemalloc would make this test 15x
    # slower): holding the file, or the lines, would add tens of megabytes.
    start = peak = resident_bytes()
    count, total = 0, Decimal(0)
    with path.open("rb") as bill:
        for line in read_tradebill(bill, MCHID, OURS):
            count, total = count + 1, total + line.amount
            if count % 1000 == 0:
                peak = max(peak, resident_bytes())
    assert (count, total) == (100_000, Decimal("100000.00"))
    assert peak - start < 15_000_000, f"reading a 23 MB bill grew memory by {peak - start} bytes"


# The adapter against the fake WeChat Pay API


def at(hour: int, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=CHINA)


async def paid(
    adapter: WechatPayAdapter, fake: FakeWechatPay, order_id: str, amount: str, when: datetime
) -> None:
    await adapter.create_payment(
        PaymentOrder(
            order_id=order_id,
            amount=Decimal(amount),
            currency="CNY",
            provider="wechatpay",
            channel="wechat_native",
            subject="小杯,加冰",  # a comma in the product name
            notify_url="https://tempay.example/notify/wechatpay",
        )
    )
    fake.pay(order_id, at=when)


async def collect(lines: AsyncIterator[StatementLine]) -> list[StatementLine]:
    return [line async for line in lines]


async def test_the_statement_is_the_days_bill(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    await paid(adapter, fake, "ord-day-0001", "12.34", at(9))
    await paid(adapter, fake, "ord-day-0002", "0.01", at(23))
    await paid(adapter, fake, "ord-before-01", "7.00", at(23, date(2024, 4, 30)))
    await adapter.create_payment(
        PaymentOrder(
            order_id="ord-unpaid-01",
            amount=Decimal("1.00"),
            currency="CNY",
            provider="wechatpay",
            notify_url="https://tempay.example/notify/wechatpay",
        )
    )
    refund = RefundRequest(
        order_id="ord-day-0001", refund_id="rf-day-0001", amount=Decimal("2.00"), currency="CNY"
    )
    await adapter.create_refund(refund)
    fake.finish_refund("rf-day-0001", "SUCCESS", at=at(12))

    lines = await collect(adapter.statement(DAY))

    orders = fake.orders
    assert lines == [
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-day-0001",
            provider_trade_no=orders["ord-day-0001"]["transaction_id"],
            amount=Decimal("12.34"),
            currency="CNY",
            at=at(9),
            merchant=MCHID,
        ),
        StatementLine(
            kind=StatementLineKind.REFUND,
            order_id="ord-day-0001",
            provider_trade_no=orders["ord-day-0001"]["transaction_id"],
            refund_id="rf-day-0001",
            provider_refund_no=fake.refunds["rf-day-0001"]["refund_id"],
            amount=Decimal("2.00"),
            currency="CNY",
            at=at(12),
            merchant=MCHID,
        ),
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="ord-day-0002",
            provider_trade_no=orders["ord-day-0002"]["transaction_id"],
            amount=Decimal("0.01"),
            currency="CNY",
            at=at(23),
            merchant=MCHID,
        ),
    ]
    # Asked for gzipped, and both the tradebill call and the download were signed.
    bill_calls = [url for _, url, _ in fake.requests if "/bill" in url]
    assert bill_calls[0] == "/v3/bill/tradebill?bill_date=2024-05-01&bill_type=ALL&tar_type=GZIP"
    assert bill_calls[1].startswith("/v3/billdownload/file?token=")
    assert all(ok for _, _, ok in fake.requests)


async def test_a_corrupt_hash_refuses_the_statement(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    await paid(adapter, fake, "ord-day-0001", "12.34", at(9))
    fake.bill_hash_corrupt = True
    with pytest.raises(StatementError, match="hash mismatch"):
        await collect(adapter.statement(DAY))


async def test_a_bill_of_another_merchant_is_refused(
    adapter: WechatPayAdapter, fake: FakeWechatPay
) -> None:
    fake.bill_content = SAMPLE.replace(MCHID.encode(), b"1900000999")
    with pytest.raises(StatementError, match="another merchant"):
        await collect(adapter.statement(DAY))


async def test_a_day_without_a_bill_is_refused_by_its_code(adapter: WechatPayAdapter) -> None:
    with pytest.raises(ProviderRefused, match="no bill for 2024-05-01") as caught:
        await collect(adapter.statement(DAY))
    assert caught.value.code == "NO_STATEMENT_EXIST"


async def test_an_unbelievable_or_failing_answer_is_a_provider_error(
    adapter: WechatPayAdapter, fake: FakeWechatPay, other_key: rsa.RSAPrivateKey
) -> None:
    await paid(adapter, fake, "ord-day-0001", "12.34", at(9))
    fake.answer_key = other_key  # the tradebill answer is not WeChat Pay's
    with pytest.raises(ProviderError, match="not believed"):
        await collect(adapter.statement(DAY))
    fake.answer_key = None
    fake.fail_status, fake.fail_times = 500, 1
    with pytest.raises(ProviderError, match="HTTP 500"):
        await collect(adapter.statement(DAY))
    assert len(await collect(adapter.statement(DAY))) == 1


async def test_an_unreachable_api_is_a_provider_error(config: WechatPayConfig) -> None:
    adapter = WechatPayAdapter(config)  # api_base http://127.0.0.1:9: nothing listens
    try:
        with pytest.raises(ProviderError, match="unreachable"):
            await collect(adapter.statement(DAY))
    finally:
        await adapter.aclose()


def test_the_download_url_must_be_wechat_pays(config: WechatPayConfig) -> None:
    adapter = WechatPayAdapter(config)
    assert adapter._bill_url("http://127.0.0.1:9/v3/billdownload/file?token=x")
    assert adapter._bill_url("https://api.mch.weixin.qq.com/v3/billdownload/file?token=x")
    for url in ("https://evil.example/v3/billdownload/file", "http://api.mch.weixin.qq.com/x"):
        with pytest.raises(StatementError, match="not followed"):
            adapter._bill_url(url)
