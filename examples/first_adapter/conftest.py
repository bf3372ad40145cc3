pytest_plugins = ["adapters.sdk.testkit"]
