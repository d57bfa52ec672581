"""Engines behind the one harness interface (`harness.engine.Engine`), one sub-package each."""
