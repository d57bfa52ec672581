"""Engines behind the one harness interface (`harness.spec.engine.Engine`), one sub-package each."""
