"""The gateway's APIs: its own JSON routes under ``/api/``, the FastAPI data API at
``/api/v1`` and the MCP server at ``/mcp``; all mounted behind the whole chain.

Modules: ``routes`` (``/api/tools``, ``/api/policy/decision``), ``rest`` (FastAPI),
``mcp_server`` (MCP), ``access`` (who is asking and what they may do, shared),
``csrf`` (forgery protection for unsafe methods with cookie sessions).
"""
