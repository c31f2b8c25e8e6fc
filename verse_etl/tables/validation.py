"""Lazy schema validation: every failing row goes to quarantine with the check that failed.

A table is validated against its pandera model with ``lazy=True`` so that one run reports every
failure. Rows named by a failure are taken out (unless the check's mode is ``ignore``) and become
quarantine records; what is left is validated again and returned coerced to the contract's types.

Quality checks, declared with ``raise_warning=True`` on the model, describe the source rather than
break the contract: a row failing one stays in the table and gets one quarantine record per
failed check (unless that check's mode is ``ignore``), so that it is reported, never hidden.
"""

from __future__ import annotations

import copy
import functools
import json
from collections import defaultdict
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from verse_etl.cases.records import QuarantineRecord, quarantine_record
from verse_etl.params import CheckParams


def validate_table(
    df: pd.DataFrame,
    model: type[pa.DataFrameModel],
    *,
    table: str,
    source_of: Any,
    case_of: Any,
    file_of: Any,
    checks: CheckParams,
) -> tuple[pd.DataFrame, list[QuarantineRecord]]:
    """Validate ``df`` against ``model``; return the good rows and the quarantined ones.

    Parameters
    ----------
    source_of, case_of
        Functions of a row (``pd.Series``) giving its source and case id, used to write the
        quarantine records.
    file_of
        Function of a row and the name of the check it failed (several joined by ``,``) giving
        the source file the record names: the file that check is about.

    Raises
    ------
    pandera.errors.SchemaErrors
        If the table as a whole breaks the contract (a missing or extra column): that is a bug in
        the pipeline, not bad input, and must not be quarantined away.
    """
    quarantined: list[QuarantineRecord] = []
    keys = list(getattr(model.Config, "unique", None) or [])
    df = df.reset_index(drop=True)
    for _ in range(3):  # dropping rows cannot create new row failures; the loop is a safeguard
        try:
            good = contract_schema(model).validate(df, lazy=True)
            quarantined += _quality_records(good, model, table, source_of, case_of, file_of, checks)
            return good, quarantined
        except SchemaErrors as e:
            cases = e.failure_cases
            if cases["index"].isna().any():
                raise  # a table-level failure is a pipeline bug: never quarantine it away
        failed: dict[int, list[str]] = defaultdict(list)
        for _, case in cases.iterrows():
            check = str(case["check"])
            if checks.mode(check) == "ignore":
                continue
            if case.get("schema_context") == "DataFrameSchema":
                # A check of the whole row: pandera lists every column's value; the row's key
                # (in the reason) and the check's name say it.
                failed[int(case["index"])].append(check)
                continue
            column = case["column"] if isinstance(case["column"], str) else ""
            label = f"{check}({column})" if column else check
            failed[int(case["index"])].append(f"{label}: got {case['failure_case']!r}")
        if not failed:
            # Only checks set to "ignore" failed: keep every row (the Parquet writer applies the
            # contract's types).
            quarantined += _quality_records(df, model, table, source_of, case_of, file_of, checks)
            return df, quarantined
        for index, problems in sorted(failed.items()):
            row = df.loc[index]
            names = sorted({p.split(":")[0].split("(")[0] for p in problems})
            severity = "raise" if any(checks.mode(n) == "raise" for n in names) else "warn"
            file = str(file_of(row, ",".join(names)))
            what = ", ".join(f"{k}={row[k]}" for k in keys)
            quarantined.append(
                quarantine_record(
                    str(source_of(row)),
                    str(case_of(row)),
                    file,
                    ",".join(names),
                    f"{table} row ({what}) fails {'; '.join(sorted(set(problems)))}",
                    table=table,
                    severity=severity,
                    record=json.dumps(row.to_dict(), default=str, sort_keys=True),
                )
            )
        df = df.drop(index=list(failed)).reset_index(drop=True)
    raise RuntimeError(f"{table}: validation did not settle")  # pragma: no cover


@functools.cache
def contract_schema(model: type[pa.DataFrameModel]) -> pa.DataFrameSchema:
    """``model``'s schema without its quality checks (``raise_warning=True``): those are
    evaluated once, row by row, by :func:`_quality_records`. Validating with them too ran each
    of them twice (pandera's warning was discarded), the level and order checks being the
    dearest part of writing the tables. Made once per model, as pandera makes its schema."""
    schema = copy.deepcopy(model.to_schema())
    schema.checks = [c for c in schema.checks if not c.raise_warning]
    for column in schema.columns.values():
        column.checks = [c for c in column.checks if not c.raise_warning]
    return schema


def quality_checks(model: type[pa.DataFrameModel]) -> list[tuple[str | None, pa.Check]]:
    """The model's quality checks (``raise_warning=True``) as ``(column or None, check)``."""
    schema = model.to_schema()
    found: list[tuple[str | None, pa.Check]] = [(None, c) for c in schema.checks if c.raise_warning]
    for name, column in schema.columns.items():
        found += [(name, c) for c in column.checks if c.raise_warning]
    return found


def _quality_records(
    df: pd.DataFrame,
    model: type[pa.DataFrameModel],
    table: str,
    source_of: Any,
    case_of: Any,
    file_of: Any,
    checks: CheckParams,
) -> list[QuarantineRecord]:
    records: list[QuarantineRecord] = []
    if df.empty:
        return records
    keys = list(getattr(model.Config, "unique", None) or [])
    for column, check in quality_checks(model):
        name = str(check.name)
        mode = checks.mode(name)
        if mode == "ignore":
            continue
        data = df if column is None else df[column]
        output = check(data).check_output
        passed = pd.Series(output, index=df.index).astype("boolean")
        if column is not None and check.ignore_na:
            passed |= df[column].isna()
        failing = df.index[~passed.fillna(False).astype(bool)]
        if failing.empty:
            continue
        # A model may say what the check found in each row (e.g. the levels at fault).
        finder = getattr(model, "findings", None)
        found = finder(name, df) if callable(finder) else None
        for index in failing:
            row = df.loc[index]
            what = ", ".join(f"{k}={row[k]}" for k in keys)
            why = check.error or name
            if found is not None and found[index] is not None:
                why = f"{found[index]}; {why}"
            file = str(file_of(row, name))
            records.append(
                quarantine_record(
                    str(source_of(row)),
                    str(case_of(row)),
                    file,
                    name,
                    f"{table} row ({what}) flagged by {name}: {why}",
                    fix="the row is kept",
                    table=table,
                    severity="raise" if mode == "raise" else "warn",
                    record=json.dumps(row.to_dict(), default=str, sort_keys=True),
                )
            )
    return records
