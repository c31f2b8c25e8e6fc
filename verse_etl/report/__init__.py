"""The build report: one static HTML page and the QC pictures drawn from the stores."""
