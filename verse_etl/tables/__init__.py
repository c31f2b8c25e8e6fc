"""The tables step: case rows -> validated, byte-stable Parquet tables, switched into place as one
generation; the data dictionary and what a build holds."""
