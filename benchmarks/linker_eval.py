"""Precision and recall of the entity linker on FinEntity's annotated mentions.

FinEntity labels every named financial entity of a paragraph (companies, but also indices,
sectors, commodities). Gold: the annotated entities whose name is a listed company's
(the company lists' names, cleaned, compared exactly, plus the alias list). Recall: gold
entities the linker finds in their paragraph with the right ticker. Precision: linker hits
that overlap an annotated entity (an unannotated hit is a false positive: FinEntity marks
every financial entity). Prints the figures and the most frequent misses and false hits.

    .venv/bin/python benchmarks/linker_eval.py [--data data/finentity/train.jsonl]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from finsentry.settings import Settings
from finsentry.streams.entity_linking import (
    CompanyIndex,
    clean_company_name,
    find_mentions,
    load_company_index,
)


def gold_tickers(value: str, names: dict[str, set[str]]) -> set[str]:
    """Every symbol listed under this name (share classes and preferreds share names)."""
    return names.get(clean_company_name(value).casefold(), set())


def evaluate(rows: list[dict], index: CompanyIndex) -> dict[str, object]:
    names: dict[str, set[str]] = {}
    for symbol, name in index.names.items():
        names.setdefault(name.casefold(), set()).add(symbol)
    for alias, symbol in index.aliases.items():
        names.setdefault(clean_company_name(alias).casefold(), set()).add(symbol)
    gold = found_gold = hits = true_hits = 0
    misses: Counter[str] = Counter()
    false_hits: Counter[str] = Counter()
    for row in rows:
        text, entities = row["text"], row["entities"]
        mentions = find_mentions(text, index)
        by_ticker = {c.ticker: c for c in mentions}
        for entity in entities:
            tickers = gold_tickers(entity["value"], names)
            if not tickers:
                continue
            gold += 1
            if any(
                m.start < entity["end"] and m.end > entity["start"]
                for ticker in tickers
                if ticker in by_ticker
                for m in by_ticker[ticker].mentions
            ):
                found_gold += 1
            else:
                misses[f"{entity['value']} ({'/'.join(sorted(tickers))})"] += 1
        paragraph_gold = {t for e in entities for t in gold_tickers(e["value"], names)}
        for company in mentions:
            hits += 1
            overlaps = any(
                m.start < e["end"] and m.end > e["start"]
                for m in company.mentions
                for e in entities
            )
            if overlaps or company.ticker in paragraph_gold:
                true_hits += 1
            else:
                first = company.mentions[0]
                false_hits[f"{text[first.start : first.end]} -> {company.ticker}"] += 1
    return {
        "paragraphs": len(rows),
        "gold_entities": gold,
        "recall": found_gold / gold if gold else 0.0,
        "linker_hits": hits,
        "precision": true_hits / hits if hits else 0.0,
        "top_misses": misses.most_common(15),
        "top_false_hits": false_hits.most_common(15),
    }


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=settings.data_dir / "finentity/train.jsonl")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    report = evaluate(rows, load_company_index(settings.company_files))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['paragraphs']} paragraphs, {report['gold_entities']} annotated listed companies"
    )
    print(f"recall    {report['recall']:.3f}")
    print(f"precision {report['precision']:.3f} ({report['linker_hits']} companies found)")
    print("most frequent misses:", report["top_misses"])
    print("most frequent false hits:", report["top_false_hits"])


if __name__ == "__main__":
    main()
