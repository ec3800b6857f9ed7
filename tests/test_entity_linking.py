"""Tickers from cashtags, exchange tags and company names."""

from __future__ import annotations

from pathlib import Path

import pytest

from finsentry.streams.entity_linking import (
    clean_company_name,
    find_tickers,
    load_company_index,
)


@pytest.fixture(scope="module")
def companies(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("companies")
    curated = folder / "curated.csv"
    curated.write_text(
        "Symbol,Security,GICS Sector\n"
        "AAPL,Apple Inc.,Information Technology\n"
        'TSLA,"Tesla, Inc.",Consumer Discretionary\n'
        "TGT,Target Corporation,Consumer Staples\n"
        "BAC,Bank of America,Financials\n"
        "MMM,3M,Industrials\n"
        "GOOGL,Alphabet Inc. (Class A),Communication Services\n"
    )
    broad = folder / "listing.csv"
    broad.write_text(
        "Symbol,Security Name\n"
        'ROOT,"Root, Inc. - Class A Common Stock"\n'
        "AMER,America Movil Holdings - Common Stock\n"
    )
    return load_company_index([curated, broad])


@pytest.mark.parametrize(
    ("text", "tickers"),
    [
        ("$AAPL and $tsla rally", ["AAPL", "TSLA"]),
        ("Shares of $BTC.X and $NEWCO jump", ["BTC.X", "NEWCO"]),
        ("It costs $100 today", []),
        ("Nvidia (NASDAQ: NVDA) jumps", ["NVDA"]),
        ("Tesla recalls two million cars", ["TSLA"]),
        ("Bank of America beats estimates", ["BAC"]),
        ("3M settles the lawsuit", ["MMM"]),
        ("Alphabet and Tesla report", ["GOOGL", "TSLA"]),
        ("Apple shares rose after earnings", ["AAPL"]),
        ("I ate an apple and an Apple pie", []),
        ("We went to Target for a walk", []),
        ("Target Corporation cut its guidance", ["TGT"]),
        ("Root beer float", []),
        ("Root Inc shares fall", ["ROOT"]),
        ("Root shares fall after earnings", ["ROOT"]),
        ("Tesla, $TSLA, Tesla again", ["TSLA"]),
        ("$ROOT gains", ["ROOT"]),
        ("It costs $111 now", []),
    ],
)
def test_find_tickers(companies, text: str, tickers: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert find_tickers(text, companies) == tickers


def test_names_are_matched_on_word_boundaries(companies) -> None:  # type: ignore[no-untyped-def]
    assert find_tickers("Teslas everywhere", companies) == []
    assert find_tickers("Bank of Americana", companies) == []


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Apple Inc. - Common Stock", "Apple"),
        ("Alcoa Corporation Common Stock ", "Alcoa"),
        ("Agilent Technologies, Inc. Common Stock", "Agilent Technologies"),
        ("Alphabet Inc. (Class A)", "Alphabet"),
        ("Bank of America", "Bank of America"),
    ],
)
def test_clean_company_name(raw: str, clean: str) -> None:
    assert clean_company_name(raw) == clean


def test_the_shipped_lists_load(tmp_path: Path) -> None:
    from finsentry.settings import Settings

    files = Settings().company_files
    if not files:
        pytest.skip("company lists not present")
    index = load_company_index(files)
    assert {"AAPL", "MSFT", "NVDA"} <= index.symbols
    assert find_tickers("Microsoft and Nvidia lead the Nasdaq higher", index) == ["MSFT", "NVDA"]


def test_a_list_without_name_column_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="symbol column"):
        load_company_index([bad])
