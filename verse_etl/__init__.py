"""verse-etl: spine CT datasets (VerSe, MosMed CTLungCa-500) as one validated, versioned dataset.

The package is a plain library: sources are discovered into records, records become tables and
volume stores. Orchestration (Prefect) lives in ``flows/``; table contracts live in ``schemas/``.
"""

__version__ = "0.1.0"
