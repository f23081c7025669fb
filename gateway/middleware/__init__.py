"""One pure-ASGI class per concern; the order lives in ``gateway.app.build_chain``."""
