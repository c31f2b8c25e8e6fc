"""Lazy schema validation: every failing row goes to quarantine with the check that failed.

A table is validated against its pandera model with ``lazy=True`` so that one run reports every
failure. Rows named by a failure are taken out (unless the check's mode is ``ignore``) and become
quarantine records; what is left is validated again and returned coerced to the contract's types.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from verse_etl.params import CheckParams
from verse_etl.records import QuarantineRecord


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
    source_of, case_of, file_of
        Functions of a row (``pd.Series``) giving its source, case id and source file, used to
        write the quarantine records.

    Raises
    ------
    pandera.errors.SchemaErrors
        If the table as a whole breaks the contract (a missing or extra column): that is a bug in
        the pipeline, not bad input, and must not be quarantined away.
    """
    quarantined: list[QuarantineRecord] = []
    df = df.reset_index(drop=True)
    for _ in range(3):  # dropping rows cannot create new row failures; the loop is a safeguard
        try:
            return model.validate(df, lazy=True), quarantined
        except SchemaErrors as e:
            cases = e.failure_cases
            if cases["index"].isna().any():
                raise  # a table-level failure is a pipeline bug: never quarantine it away
        failed: dict[int, list[str]] = defaultdict(list)
        for _, case in cases.iterrows():
            check = str(case["check"])
            if checks.mode(check) == "ignore":
                continue
            column = case["column"] if isinstance(case["column"], str) else ""
            label = (
                f"{check}({column})" if column and column != case.get("schema_context") else check
            )
            failed[int(case["index"])].append(f"{label}: got {case['failure_case']!r}")
        if not failed:
            # Only checks set to "ignore" failed: keep every row (the Parquet writer applies the
            # contract's types).
            return df, quarantined
        for index, problems in sorted(failed.items()):
            row = df.loc[index]
            names = sorted({p.split(":")[0].split("(")[0] for p in problems})
            severity = "raise" if any(checks.mode(n) == "raise" for n in names) else "warn"
            quarantined.append(
                QuarantineRecord(
                    source=str(source_of(row)),
                    case_id=str(case_of(row)),
                    table=table,
                    file=str(file_of(row)),
                    check=",".join(names),
                    reason=f"{file_of(row)}: {table} row fails {'; '.join(sorted(set(problems)))}",
                    severity=severity,
                    record=json.dumps(row.to_dict(), default=str, sort_keys=True),
                )
            )
        df = df.drop(index=list(failed)).reset_index(drop=True)
    raise RuntimeError(f"{table}: validation did not settle")  # pragma: no cover
