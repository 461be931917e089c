"""First-class fakes used by tests, bench/ and the demo: a fake EAS backend and helpers."""
