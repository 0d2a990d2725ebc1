"""Alipay's trade bill (providers/bills.py): a sample written by hand in the documented layout
is read line by line; what the writer produces reads back; anything malformed, another
merchant's or another day's bill, or a bill cut short raises StatementError saying where,
and streamed, before any line is given."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from providers.bills import (
    CHINA,
    COLUMNS,
    BillEntry,
    parse_trade_bill,
    stream_trade_bill,
    write_trade_bill,
)
from tempay.errors import StatementError
from tempay.statements import StatementLine, StatementLineKind

PID = "2088101122136241"
DAY = date(2024, 1, 2)

HEADER = ",".join(COLUMNS)
# Alipay's layout as documented (providers/bills.py): comment lines, the column header, rows
# padded with tabs, the end line and the totals. The account is the PID with its CNY suffix.
SAMPLE = [
    "#支付宝业务明细查询",
    f"#账号：[{PID}0156]",
    "#起始日期：[2024年01月02日 00:00:00]   终止日期：[2024年01月03日 00:00:00]",
    "#-----------------------------------------业务明细列表----------------------------------------",
    HEADER,
    "2024010222001412340000000001\t,A1001\t,交易\t,咖啡\t,2024-01-02 10:00:00,"
    "2024-01-02 10:00:05,\t,\t,\t,\t,159****5620\t,10.00,10.00,0.00,0.00,0.00,0.00,0.00,\t,"
    "0.00,0.00,\t,-0.06,0.00,\t",
    "2024010222001412340000000002\t,A1002\t,交易\t,蛋糕\t,2024-01-02 23:59:00,"
    "2024-01-02 23:59:59,\t,\t,\t,\t,159****5620\t,88.80,88.80,0.00,0.00,0.00,0.00,0.00,\t,"
    "0.00,0.00,\t,-0.53,0.00,\t",
    "2024010222001412340000000001\t,A1001\t,退款\t,咖啡\t,2024-01-02 10:00:00,"
    "2024-01-02 18:30:00,\t,\t,\t,\t,159****5620\t,-4.00,-4.00,0.00,0.00,0.00,0.00,0.00,\t,"
    "0.00,0.00,R-A1001-1\t,0.02,0.00,\t",
    "#-----------------------------------------业务明细列表结束------------------------------------",
    "#交易合计：2笔，商家实收共98.80元，商家优惠共0.00元",
    "#退款合计：1笔，商家实收退款共-4.00元，商家优惠退款共0.00元",
    "#导出时间：[2024年01月03日 09:12:01]",
]
SUMMARY = [
    "#支付宝业务汇总查询",
    f"#账号：[{PID}0156]",
    "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）",
    "合计,,2,1,94.80,94.80",
]


class GbkNamed(zipfile.ZipInfo):
    """A member named in GBK without zip's UTF-8 flag, as Alipay writes them."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # noqa: N802 - zipfile's name
        return self.filename.encode("gbk"), self.flag_bits


def bill_zip(lines: list[str], *, gbk_names: bool = False, stem: str = f"{PID}_20240102") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in (
            (f"{stem}_业务明细.csv", lines),
            (f"{stem}_业务明细(汇总).csv", SUMMARY),
        ):
            info = GbkNamed(name) if gbk_names else zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, ("\r\n".join(content) + "\r\n").encode("gbk"))
    return buffer.getvalue()


def parse(data: bytes, **kwargs: object) -> list[StatementLine]:
    return list(parse_trade_bill(io.BytesIO(data), **kwargs))  # type: ignore[arg-type]


def with_line(index: int, replacement: str) -> list[str]:
    lines = list(SAMPLE)
    lines[index] = replacement
    return lines


def test_the_documented_sample_reads_as_statement_lines() -> None:
    lines = parse(bill_zip(SAMPLE), expected_account=PID, day=DAY)
    assert [(line.kind, line.order_id, line.amount) for line in lines] == [
        (StatementLineKind.PAYMENT, "A1001", Decimal("10.00")),
        (StatementLineKind.PAYMENT, "A1002", Decimal("88.80")),
        (StatementLineKind.REFUND, "A1001", Decimal("4.00")),
    ]
    payment, late, refund = lines
    assert payment.provider_trade_no == "2024010222001412340000000001"
    assert payment.refund_id is None and payment.currency == "CNY"
    assert payment.merchant == PID + "0156"
    assert payment.at == datetime(2024, 1, 2, 10, 0, 5, tzinfo=CHINA)
    assert payment.at.utcoffset() is not None
    # 23:59:59 Beijing time is still the 2nd there, though the 2nd's 15:59:59 UTC.
    assert late.at.isoformat() == "2024-01-02T23:59:59+08:00"
    assert refund.refund_id == "R-A1001-1"
    assert refund.provider_trade_no == payment.provider_trade_no
    assert isinstance(refund.amount, Decimal) and refund.amount > 0


def test_gbk_member_names_without_the_utf8_flag_are_found() -> None:
    assert len(parse(bill_zip(SAMPLE, gbk_names=True), expected_account=PID)) == 3


def test_the_exact_account_matches_too() -> None:
    exact = with_line(1, f"#账号：[{PID}]")
    assert len(parse(bill_zip(exact), expected_account=PID)) == 3


def test_a_bill_for_another_merchant_is_refused() -> None:
    with pytest.raises(StatementError, match=r"line 2: .*account '20889999999999990156'.*"):
        parse(bill_zip(with_line(1, "#账号：[20889999999999990156]")), expected_account=PID)
    # A longer account that merely starts with the PID is someone else's.
    with pytest.raises(StatementError, match="not this merchant's"):
        parse(bill_zip(with_line(1, f"#账号：[{PID}01560]")), expected_account=PID)


def test_a_bill_without_an_account_is_refused_when_one_is_expected() -> None:
    lines = [line for line in SAMPLE if not line.startswith("#账号")]
    with pytest.raises(StatementError, match="no #账号 line"):
        parse(bill_zip(lines), expected_account=PID)
    assert len(parse(bill_zip(lines))) == 3


def test_a_bill_for_another_day_is_refused() -> None:
    with pytest.raises(StatementError, match="line 3: the bill is for 2024-01-02, not 2024-01-03"):
        parse(bill_zip(SAMPLE), day=date(2024, 1, 3))


@pytest.mark.parametrize(
    ("index", "row", "message"),
    [
        (5, "2024010222001412340000000001,A1001,交易", r"line 6: 3 columns, expected 25"),
        (5, SAMPLE[5].replace("10.00,10.00", "ten,10.00"), r"line 6: 订单金额 'ten'"),
        (5, SAMPLE[5].replace("10.00,10.00", "10.001,10.00"), r"line 6: .*more places"),
        (5, SAMPLE[5].replace("10.00,10.00", "-10.00,10.00"), r"line 6: .*must be positive"),
        (7, SAMPLE[7].replace("-4.00,-4.00", "4.00,4.00"), r"line 8: .*must be negative"),
        (6, SAMPLE[6].replace("2024-01-02 23:59:59", "2024/01/02"), r"line 7: 完成时间"),
        (6, SAMPLE[6].replace("交易", "冻结"), r"line 7: 业务类型 '冻结'"),
        (7, SAMPLE[7].replace("R-A1001-1", ""), r"line 8: a 退款 row without"),
        (4, HEADER.replace("备注", "其他"), r"line 5: unexpected column header"),
    ],
)
def test_a_malformed_row_names_its_line(index: int, row: str, message: str) -> None:
    with pytest.raises(StatementError, match=message):
        parse(bill_zip(with_line(index, row)))


def test_a_bill_cut_short_is_refused() -> None:
    with pytest.raises(StatementError, match="cut short: no 业务明细列表结束 line"):
        parse(bill_zip(SAMPLE[:7]))
    # The end line is there but a row is missing: the totals say so.
    with pytest.raises(StatementError, match="line 9: 交易合计 says 2 rows, the bill has 1"):
        parse(bill_zip(SAMPLE[:6] + SAMPLE[7:]))


async def test_streamed_no_line_of_a_bad_bill_is_given(tmp_path: Path) -> None:
    """The whole bill is checked before its first line is given: a bill whose last row is
    malformed gives none of the good rows before it."""
    path = tmp_path / "bill.zip"
    path.write_bytes(bill_zip(with_line(7, SAMPLE[7].replace("-4.00,-4.00", "x,-4.00"))))
    given: list[StatementLine] = []
    with pytest.raises(StatementError, match="line 8: 订单金额 'x'"):
        async for line in stream_trade_bill(path, expected_account=PID, day=DAY):
            given.append(line)
    assert given == []
    path.write_bytes(bill_zip(SAMPLE))
    assert len([line async for line in stream_trade_bill(path, expected_account=PID)]) == 3


def test_not_gbk_not_a_zip_and_no_details_file_are_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{PID}_20240102_业务明细.csv", "\r\n".join(SAMPLE).encode("utf-16"))
    with pytest.raises(StatementError, match="line 1: not GBK text"):
        parse(buffer.getvalue())
    with pytest.raises(StatementError, match="not a readable zip"):
        parse(b"PK\x03\x04 this is not a zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{PID}_20240102_业务明细(汇总).csv", "\r\n".join(SUMMARY).encode("gbk"))
    with pytest.raises(StatementError, match=r"one \*_业务明细.csv file, found 0 \(members: "):
        parse(buffer.getvalue())


def test_what_the_writer_writes_reads_back() -> None:
    at = datetime(2024, 1, 2, 12, 0, tzinfo=CHINA)
    lines = [
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="A1",
            provider_trade_no="T1",
            amount=Decimal("10.00"),
            currency="CNY",
            at=at,
            merchant=PID,
        ),
        StatementLine(
            kind=StatementLineKind.PAYMENT,
            order_id="A2",
            provider_trade_no="T2",
            amount=Decimal("3.50"),
            currency="USD",
            at=at,
            merchant=PID,
        ),
        StatementLine(
            kind=StatementLineKind.REFUND,
            order_id="A1",
            provider_trade_no="T1",
            refund_id="R1",
            amount=Decimal("2.00"),
            currency="CNY",
            at=at,
            merchant=PID,
        ),
    ]
    buffer = io.BytesIO()
    entries = [BillEntry(line, subject="咖啡, cake\n🍰") for line in lines]
    write_trade_bill(buffer, entries, account=PID, day=DAY)
    read = parse(buffer.getvalue(), expected_account=PID, day=DAY, currencies_in_remarks=True)
    assert read == lines
    # Without the sandbox's remark extension every line is CNY, as in Alipay's own bills.
    assert [line.currency for line in parse(buffer.getvalue())] == ["CNY"] * 3


def many_entries(count: int) -> Iterator[BillEntry]:
    at = datetime(2024, 1, 2, 12, 0, tzinfo=CHINA)
    for i in range(count):
        yield BillEntry(
            StatementLine(
                kind=StatementLineKind.PAYMENT,
                order_id=f"order-{i}",
                provider_trade_no=f"2024010222001{i:015d}",
                amount=Decimal("12.34"),
                currency="CNY",
                at=at,
            ),
            subject="绿茶",
        )


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
async def test_a_large_bill_is_read_with_bounded_memory(tmp_path: Path) -> None:
    """A sanity check, not a benchmark: 100,000 rows are read without holding them (held,
    the lines alone would take over 100 MB)."""
    count = 100_000
    path = tmp_path / "bill.zip"
    write_trade_bill(path, many_entries(count), account=PID, day=DAY)
    before = resident_bytes()
    growth = 0
    seen, total = 0, Decimal(0)
    async for line in stream_trade_bill(path, expected_account=PID, day=DAY):
        seen += 1
        total += line.amount
        if seen % 5_000 == 0:
            growth = max(growth, resident_bytes() - before)
    assert (seen, total) == (count, Decimal("12.34") * count)
    assert growth < 30 * 1024 * 1024, f"resident memory grew by {growth / 1e6:.1f} MB"
