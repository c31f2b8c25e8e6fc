"""The files the readers open: NIfTI, DICOM, small JSON, zip members and tar.gz studies, within
input limits; files written atomically."""
