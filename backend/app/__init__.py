"""MonAssurance report-job platform."""
