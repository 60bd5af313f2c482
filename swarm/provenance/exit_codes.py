"""`swarm audit`'s exit code for each failure class (0: verified; 2: a usage error, e.g. no log at PATH).
Apart from the audit so that `swarm --help` lists them without importing it."""

EXIT_CODES = {
    "manifest": 10, "format": 11, "signature": 12, "schema": 13, "run": 14, "unauthorised": 15, "chain": 16,
    "chunks": 17, "checkpoint": 18, "inconsistent": 19, "witnesses": 20, "files": 21,
}
